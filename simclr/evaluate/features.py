"""Frozen-feature extraction that checks its own assumption: the encoder is not changed by it."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from simclr.data import ImageData, batch_loader


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BN running stats included), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_unchanged(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    changed = [k for k, v in before.items()
               if not (v.shape == after[k].shape and torch.equal(v.isnan(), after[k].isnan())  # NaN != NaN
                       and torch.equal(torch.nan_to_num(v, nan=0.0), torch.nan_to_num(after[k], nan=0.0)))]
    if changed:
        raise RuntimeError(f"encoder changed during frozen evaluation: {changed[:5]} — a bug, please report it")


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Eval mode + inference mode; restores the training flag; asserts bit-identical weights/buffers."""
    was_training = module.training
    before = snapshot(module)
    module.eval()
    try:
        with torch.inference_mode():
            yield module
    finally:
        module.train(was_training)
    assert_unchanged(before, module)


def extract_features(encoder: nn.Module, data: ImageData, preprocess, batch_size: int = 512,
                     device: torch.device | str | None = None, progress: bool = False) -> torch.Tensor:
    """(N, F) float32 features on CPU. `preprocess`: uint8 batch on device -> model input."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    out = []
    loader = batch_loader(data, batch_size)
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc="features", unit="batch", leave=False)
    # fp32 even when called inside a bf16-mixed training step's autocast (the kNN monitor): features are compared
    # by small cosine differences, which bf16's 8-bit mantissa rounds away
    with frozen(encoder), torch.autocast(device.type, enabled=False):
        for images, _ in loader:
            out.append(encoder(preprocess(images.to(device, non_blocking=True))).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
