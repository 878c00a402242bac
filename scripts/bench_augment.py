"""Two-view augmentation throughput: this package's batched pipeline vs a torchvision v2 per-image loop.

The per-image loop is what DataLoader-based peers (lightly, solo-learn) run in their workers.
Both sides run in this process, on the same batch, same machine. Prints ms/batch and the ratio.

    python scripts/bench_augment.py                 # 256x3x32x32 (simclr_cifar), 256x3x96x96, 64x3x224x224
    python scripts/bench_augment.py --allocator default   # without simclr's glibc allocator tuning
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torchvision.transforms.v2 as T

from simclr.augment import TwoViewAugmenter, load_policy, policy_from_dict
from simclr.utils import tune_cpu_allocator


def torchvision_pipeline(size: int, strength: float, blur: bool):
    s = strength
    ops = [T.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), T.RandomHorizontalFlip(),
           T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8), T.RandomGrayscale(p=0.2)]
    if blur:
        ops.append(T.RandomApply([T.GaussianBlur(int(0.1 * size) // 2 * 2 + 1, (0.1, 2.0))], p=0.5))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])]
    return T.Compose(ops)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def policy_at(policy_name: str, size: int):
    """The shipped policy, its crop resized to `size` when that differs (simclr_imagenet crops to 96)."""
    policy = load_policy(policy_name)
    crops = [o for o in policy.views[0] if o.name == "random_resized_crop"]
    if crops and crops[0].params.size not in (None, size):
        policy = policy_from_dict({"extends": policy_name, "name": f"{policy_name}_{size}",
                                   "override": {"random_resized_crop": {"size": size}}})
    return policy


def bench(policy_name: str, size: int, batch: int, repeats: int, strength: float, blur: bool, device: str,
          compiled: bool = False):
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    policy = policy_at(policy_name, size)
    ours = TwoViewAugmenter(policy, seed=0)
    tv = torchvision_pipeline(size, strength, blur)
    ours_ms = timed(lambda: ours(x), repeats)
    tv_ms = timed(lambda: [(tv(img), tv(img)) for img in x], max(2, repeats // 3))
    print(f"{policy_name:16s} {batch:3d}x3x{size}x{size}  simclr: {ours_ms:8.1f} ms/batch   torchvision loop: "
          f"{tv_ms:8.1f} ms/batch   ratio: {tv_ms / ours_ms:5.1f}x")
    if compiled:
        torch._dynamo.reset()  # each row compiles afresh: a previous row's graphs would hit the recompile limit
        fused = TwoViewAugmenter(policy, seed=0, compile=True)
        start = time.perf_counter()
        fused(x)
        compile_s = time.perf_counter() - start
        fused_ms = timed(lambda: fused(x), repeats)
        print(f"{'':16s} compile_augment: {fused_ms:8.1f} ms/batch   ratio: {tv_ms / fused_ms:5.1f}x   "
              f"(one-off compile {compile_s:.0f} s)")
    if device == "cuda":
        xg = x.cuda()
        def run():
            ours(xg)
            torch.cuda.synchronize()
        ms = timed(run, repeats * 3)
        print(f"{'':16s} on {torch.cuda.get_device_name()}: {ms:.2f} ms/batch = {batch / ms * 1000:,.0f} images/s "
              f"(two views each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--allocator", choices=["tuned", "default", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compile_augment rows")
    args = ap.parse_args()
    if args.allocator == "both":
        subprocess.run([sys.executable, __file__, "--allocator", "default", "--repeats", str(args.repeats),
                        "--batch", str(args.batch)], check=True)
        args.allocator = "tuned"
    tuned = tune_cpu_allocator() if args.allocator == "tuned" else False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, allocator "
          f"{'tuned (simclr default)' if tuned else 'glibc default'}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    compiled = args.compile and args.allocator == "tuned"
    bench("simclr_cifar", 32, args.batch, args.repeats, strength=0.5, blur=False, device=device, compiled=compiled)
    bench("simclr_imagenet", 96, args.batch, max(3, args.repeats // 3), strength=1.0, blur=True, device=device,
          compiled=compiled)
    bench("simclr_imagenet", 224, max(1, args.batch // 4), max(3, args.repeats // 3), strength=1.0, blur=True,
          device=device, compiled=compiled)


if __name__ == "__main__":
    main()
