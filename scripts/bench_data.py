"""Streamed vs in-memory data path: peak RSS and image pairs/s on the CIFAR-10 JPEG archive.

    python scripts/bench_data.py                       # 10k and 60k images, batch 256, 2 decode workers
    python scripts/bench_data.py --sizes 10000 --batches 20

The archive is unpacked once into a temporary folder (a .tar.gz cannot be read at offsets); an ImageFolder
tree of the first N images (symlinks) is what both paths read. Each (path, N) runs in a fresh process, so
its peak RSS is its own (`main`: the training process; decode workers: their private memory). Throughput is
loader + two-view augmentation (simclr_cifar policy, on CPU as in the CPU configs) over `--batches` batches
after one warm-up batch; the in-memory path's one-off decode (then cached) is timed separately. Targets
(issue 13): peak RSS flat in N for the streamed path; pairs/s >= 0.9x the in-memory path.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"


def make_tree(unpacked: Path, n: int, out: Path) -> Path:
    """The first n images (train, then test; round-robin over classes) as symlinks in <out>/<class>/."""
    splits = [next(unpacked.glob(f"*/{s}")) for s in ("train", "test")]
    classes = sorted(p.name for p in splits[0].iterdir())
    files = {c: [f for s in splits for f in sorted((s / c).iterdir())] for c in classes}
    for i in range(n):
        c = classes[i % len(classes)]
        src = files[c][i // len(classes)]
        (out / c).mkdir(parents=True, exist_ok=True)
        (out / c / f"{src.parent.parent.name}-{src.name}").symlink_to(src)
    return out


def measure(path: str, tree: str, batches: int, batch_size: int, workers: int, args_threads: int = 0) -> dict:
    """Runs in a fresh process (see main)."""
    import torch

    from simclr.augment import TwoViewAugmenter, load_policy
    from simclr.data.datamodule import batch_loader
    from simclr.data.imagefolder import read_imagefolder
    from simclr.data.stream import index_images, stream_loader
    from simclr.utils import tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(args_threads or max(1, (os.cpu_count() or 2) - (workers if path == "stream" else 0)))
    decode_s = None
    if path == "memory":
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            data = read_imagefolder(Path(tree), None, 32, Path(cache))
        decode_s = time.perf_counter() - start
        loader = batch_loader(data, batch_size, seed=0, shuffle=True, drop_last=True)
    else:
        loader = stream_loader(index_images(tree), 32, batch_size, seed=0, num_workers=workers)
    augment = TwoViewAugmenter(load_policy("simclr_cifar"), seed=0)
    it = iter(loader)
    augment(next(it)[0])  # warm-up
    start, done = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        augment(x)
        done += len(x)
    elapsed = time.perf_counter() - start
    return {"path": path, "images": len(loader.dataset), "pairs_per_s": done / elapsed, "decode_s": decode_s,
            "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20,
            "workers_private_mib": _children_private_mib()}


def _children_private_mib() -> float:
    """Memory the live decode workers hold privately (forked workers share the parent's pages, so their RSS
    would count the parent again)."""
    total = 0
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default=str(ARCHIVE))
    ap.add_argument("--sizes", default="10000,60000")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: cores - decode workers)")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(measure(args._child[0], args._child[1], args.batches, args.batch_size, args.workers,
                                args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(f"unpacking {args.archive} ...", flush=True)
        with tarfile.open(args.archive) as tar:
            tar.extractall(Path(tmp) / "unpacked", filter="data")
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            tree = make_tree(Path(tmp) / "unpacked", n, Path(tmp) / f"tree-{n}")
            for path in ("memory", "stream"):
                out = subprocess.run([sys.executable, __file__, "--_child", path, str(tree), "--batches",
                                      str(args.batches), "--batch-size", str(args.batch_size), "--workers",
                                      str(args.workers), "--threads", str(args.threads)], capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                decode = f"{row['decode_s']:.1f} s" if row["decode_s"] is not None else "per batch"
                print(f"{path:6s} N={row['images']:6d}  {row['pairs_per_s']:8.0f} pairs/s  peak RSS main "
                      f"{row['peak_rss_main_mib']:7.0f} MiB, workers' private {row['workers_private_mib']:6.0f} MiB  "
                      f"decode {decode}", flush=True)
            mem, stream = rows[-2], rows[-1]
            print(f"       N={n:6d}  stream/memory throughput {stream['pairs_per_s'] / mem['pairs_per_s']:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
