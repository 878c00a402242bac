"""Training memory per batch size for ResNet-18/50 (CIFAR stem at 32x32, ImageNet stem at 96x96).

Computed, not measured on a GPU: the storages autograd saves for backward are counted (each once) with
`torch.autograd.graph.saved_tensors_hooks` on a small CPU batch (both views), scaled linearly with
batch size, plus parameters, gradients and LARS momentum (3 x params, fp32). bf16-mixed keeps most
saved activations in bf16 (measured under CPU autocast). Allocator slack, cuDNN workspaces and the
CUDA context (~0.5-1 GiB) are not included. On a GPU, use torch.cuda.max_memory_allocated to measure.

    python scripts/memory_table.py
"""
from __future__ import annotations

import torch

from simclr.models import Encoder, ProjectionHead


def saved_bytes(backbone: str, size: int, cifar_stem: bool, bf16: bool, batch: int = 4) -> float:
    """Bytes saved for backward per image pair."""
    torch.manual_seed(0)
    enc = Encoder(backbone, 3, cifar_stem=cifar_stem)
    head = ProjectionHead(enc.feature_dim, 2048, 128)
    seen: dict[int, int] = {}  # storage pointer -> bytes: a tensor saved by two ops is stored once

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.rand(2 * batch, 3, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = head(enc(x)).float().sum()
    del out
    return (sum(seen.values()) - x.numel() * 4) / batch  # the input batch itself is not an activation


def main():
    print("| backbone | input | precision | params+grads+momentum | per image pair | batch 256 | batch 512 | batch 1024 |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone in ("resnet18", "resnet50"):
        for size, stem in ((32, True), (96, False)):
            enc = Encoder(backbone, 3, cifar_stem=stem)
            n_params = sum(p.numel() for p in enc.parameters()) + enc.feature_dim * 2048 + 2048 * 128
            fixed = 3 * 4 * n_params
            for bf16 in (False, True):
                per_pair = saved_bytes(backbone, size, stem, bf16)
                cells = [f"{(fixed + b * per_pair) / 2**30:.1f} GiB" for b in (256, 512, 1024)]
                print(f"| {backbone} | {size}x{size} {'CIFAR stem' if stem else 'ImageNet stem'} | "
                      f"{'bf16-mixed' if bf16 else 'fp32'} | {fixed / 2**20:.0f} MiB | {per_pair / 2**20:.2f} MiB | "
                      + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
