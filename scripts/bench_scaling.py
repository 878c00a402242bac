"""Where a SimCLR step's time goes: augmentation / forward / backward+step / gather, as fractions.

On a GPU (ResNet-18, CIFAR-10 shapes, batch 512, bf16) the target is augmentation < 5 % of the step
and a 50k-image epoch <= 10 s on one H100. On CPU it runs a smaller default so it finishes.
With --devices N (gloo on CPU, nccl on GPU) the all-gather of embeddings is timed too.

    python scripts/bench_scaling.py                                  # CPU: small CNN, batch 256
    python scripts/bench_scaling.py --backbone resnet18 --batch 512 --precision bf16   # GPU
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from simclr.augment import TwoViewAugmenter, load_policy
from simclr.losses import nt_xent
from simclr.models import Encoder, ProjectionHead
from simclr.module.optim import LARS, split_decay
from simclr.utils import tune_cpu_allocator


def clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def measure(rank: int, world: int, args) -> dict[str, float]:
    device = torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    encoder = Encoder(args.backbone, 3, cifar_stem=True, width=args.width).to(device)
    head = ProjectionHead(encoder.feature_dim, 2048 if device.type == "cuda" else 256, 128).to(device)
    if args.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    params = torch.nn.ModuleList([encoder, head])
    decay, no_decay = split_decay(params)
    opt = LARS([{"params": decay}, {"params": no_decay, "exclude": True, "weight_decay": 0.0}], lr=0.1)
    aug = TwoViewAugmenter(load_policy("simclr_cifar"), seed=rank, rank=rank)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, device=device)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    totals = dict.fromkeys(("augmentation", "forward", "gather", "backward+step"), 0.0)
    for step in range(args.warmup + args.steps):
        t0 = clock(device)
        v1, v2 = aug(x)
        if args.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        t1 = clock(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z1, z2 = head(encoder(torch.cat([v1, v2]))).chunk(2)
        t2 = clock(device)
        if world > 1:  # the gather alone, for its share; nt_xent gathers again inside (differentiably)
            gathered = [torch.empty_like(z1) for _ in range(world)]
            dist.all_gather(gathered, z1.detach().contiguous())
        t3 = clock(device)
        loss = nt_xent(z1, z2, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t4 = clock(device)
        if step >= args.warmup:
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt / args.steps
    return totals


def worker(rank, world, args):
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=rank, world_size=world)
    totals = measure(rank, world, args)
    if rank == 0:
        step = sum(totals.values())
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        print(f"# {args.backbone}, batch {args.batch}/device x {world} device(s), 32x32, {args.precision}, {name}")
        for key, dt in totals.items():
            print(f"{key:14s} {dt * 1000:9.1f} ms  {dt / step:6.1%}")
        print(f"{'step':14s} {step * 1000:9.1f} ms   -> {args.batch * world / step:,.0f} image pairs/s; "
              f"a 50,000-image epoch: {50_000 / (args.batch * world) * step:.1f} s")
    if world > 1:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--backbone", default="resnet18" if gpu else "small_cnn")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=512 if gpu else 256)
    ap.add_argument("--precision", choices=["32", "bf16"], default="bf16" if gpu else "32")
    ap.add_argument("--channels-last", action="store_true", default=gpu)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20 if gpu else 5)
    ap.add_argument("--warmup", type=int, default=5 if gpu else 1)
    args = ap.parse_args()
    tune_cpu_allocator()
    if args.devices > 1:
        torch.multiprocessing.spawn(worker, args=(args.devices, args), nprocs=args.devices)
    else:
        worker(0, 1, args)


if __name__ == "__main__":
    main()
