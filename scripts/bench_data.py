"""Streamed vs in-memory data path: peak RSS and image pairs/s on the CIFAR-10 JPEG archive, side by side.

    python scripts/bench_data.py                       # 10k and 60k images, batch 256, threads as in training
    python scripts/bench_data.py --threads 1 --workers 1,2 --sizes 10000   # other thread/worker choices side by side

The archive is unpacked once into a temporary folder (a .tar.gz cannot be read at offsets); an ImageFolder
tree of the first N images (symlinks) is what both paths read. Peak RSS: each (N, path) in a fresh process of
its own (`main`: the training process; workers: their private memory). Throughput: both paths in one process,
segments interleaved over `--rounds` rounds. Threads are what `simclr pretrain` uses: torch's default
intra-op threads and, for the streamed path, `data.num_workers` decode workers (configs/cifar10_cpu.yaml
leaves both at their defaults: 2 threads and 1 worker on 2 cores). Two rows:

* `loader+augment`: the strict data-path ratio, loader -> two-view augmentation (simclr_cifar policy, on the
  CPU as in the CPU configs), `--batches` batches after one warm-up batch.
* `train step`: the whole step of configs/cifar10_cpu.yaml (loader -> augmentation -> small CNN forward,
  NT-Xent, backward, LARS step, under Lightning as `simclr pretrain` runs it), `--step-batches` steps after
  one warm-up step, on the same loader.

The in-memory path's one-off decode (then cached) is timed separately. Targets (issue 13): peak RSS flat in N
for the streamed path; pairs/s >= 0.9x the in-memory path on the CPU config.
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

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"
CONFIG = ROOT / "configs" / "cifar10_cpu.yaml"


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


def _config(tree: str, path: str, args: argparse.Namespace, workers: int | None = None):
    from simclr.config.run import load_config

    overrides = ["data.name=imagefolder", f"data.path={tree}", f"data.loader={path}", "data.image_size=32",
                 f"data.batch_size={args.batch_size}", "data.train_per_class=null"]
    if workers is not None and path == "stream":  # the in-memory loader refuses the key
        overrides.append(f"data.num_workers={workers}")
    return load_config(str(CONFIG), overrides)


def _loader(cfg, tree: str, cache: Path):
    from simclr.data.datamodule import batch_loader
    from simclr.data.imagefolder import read_imagefolder
    from simclr.data.stream import default_workers, index_images, stream_loader

    if cfg.data.loader == "memory":
        start = time.perf_counter()
        data = read_imagefolder(Path(tree), None, cfg.data.image_size, cache)
        return batch_loader(data, cfg.data.batch_size, seed=0, shuffle=True, drop_last=True), \
            time.perf_counter() - start
    workers = cfg.data.num_workers if cfg.data.num_workers is not None else default_workers()  # as training does
    return stream_loader(index_images(tree), cfg.data.image_size, cfg.data.batch_size, seed=0,
                         num_workers=workers), None


def _loader_and_augment(loader, batches: int) -> tuple[int, float]:
    """(pairs, seconds) of `batches` loader -> augmentation steps, after a fresh iterator's warm-up batch."""
    from simclr.augment import TwoViewAugmenter, load_policy

    augment = TwoViewAugmenter(load_policy("simclr_cifar"), seed=0)
    it = iter(loader)
    augment(next(it)[0])  # warm-up
    start, done = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        augment(x)
        done += len(x)
    return done, time.perf_counter() - start


def _train_steps(cfg, loader, steps: int) -> tuple[int, float]:
    """(pairs, seconds) of Lightning's training loop on `loader`, from the warm-up step's end to the last step's."""
    import pytorch_lightning as pl

    from simclr.config.schema import to_dict
    from simclr.module import SimCLRModule

    class Clock(pl.Callback):
        def __init__(self):
            self.marks: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.marks.append(time.perf_counter())

    pl.seed_everything(0, verbose=False)
    module = SimCLRModule(to_dict(cfg), 3, 10, image_size=cfg.data.image_size)
    clock = Clock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, use_distributed_sampler=False, deterministic=True, callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return steps * cfg.data.batch_size, clock.marks[-1] - clock.marks[0]


def _setup(tree: str, path: str, args: argparse.Namespace, cache: Path, workers: int | None = None):
    import torch

    from simclr.utils import tune_cpu_allocator

    tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(tree, path, args, workers)
    return (cfg, *_loader(cfg, tree, cache))


def measure_memory(path: str, tree: str, args: argparse.Namespace) -> dict:
    """Peak RSS of one path alone (a fresh process: see main), after a few loader -> augmentation batches."""
    with tempfile.TemporaryDirectory() as cache:
        cfg, loader, decode_s = _setup(tree, path, args, Path(cache), args.stream_workers[0])
        _loader_and_augment(loader, 5)
        return {"path": path, "images": len(loader.dataset), "decode_s": decode_s,
                "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20,
                "workers_private_mib": _children_private_mib(), "workers": loader.num_workers}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its live children (the decode workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    for pid in _children():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, IndexError):
            pass
    return total


def _settle() -> None:
    """Wait until the workers stop filling their prefetch queues, so that work lands in its own segment."""
    last = _cpu_seconds()
    for _ in range(50):
        time.sleep(0.1)
        now = _cpu_seconds()
        if now - last < 0.005:
            return
        last = now


def measure_speed(tree: str, args: argparse.Namespace) -> dict:
    """Both paths in one process, segments interleaved (memory, stream, stream, memory, ...), so that the load
    of a shared machine falls on both alike: pairs/s = all pairs / all seconds of that path and row. CPU
    seconds per 1000 pairs (main process + workers, settled after each segment) do not depend on that load."""
    import torch

    with tempfile.TemporaryDirectory() as cache:
        variants = {"memory": _setup(tree, "memory", args, Path(cache))}
        for w in args.stream_workers:
            variants["stream" if w is None else f"stream-{w}w"] = _setup(tree, "stream", args, Path(cache), w)
        totals = {(v, row): [0, 0.0, 0.0] for v in variants for row in ("loader+augment", "train step")}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for v in order:
                cfg, loader, _ = variants[v]
                for row in ("loader+augment", "train step") if args.step_batches else ("loader+augment",):
                    _settle()
                    cpu = _cpu_seconds()
                    pairs, secs = _loader_and_augment(loader, args.batches) if row == "loader+augment" else \
                        _train_steps(cfg, loader, args.step_batches)
                    _settle()
                    totals[v, row][0] += pairs
                    totals[v, row][1] += secs
                    totals[v, row][2] += _cpu_seconds() - cpu  # includes warm-up batches: an upper bound
        return {"threads": torch.get_num_threads(), "workers": {v: ld.num_workers for v, (_, ld, _) in variants.items()},
                "pairs_per_s": {f"{v}|{row}": p / s for (v, row), (p, s, _) in totals.items() if s > 0},
                "cpu_s_per_1000": {f"{v}|{row}": 1000 * c / p for (v, row), (p, s, c) in totals.items() if s > 0}}


def _children() -> list[str]:
    return [pid for children in Path("/proc/self/task").glob("*/children") for pid in children.read_text().split()]


def _children_private_mib() -> float:
    """Memory the live decode workers hold privately (forked workers share the parent's pages, so their RSS
    would count the parent again)."""
    total = 0
    for pid in _children():
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total / 2**20


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(args[-3:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default=str(ARCHIVE))
    ap.add_argument("--sizes", default="10000,60000")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every path")
    ap.add_argument("--batches", type=int, default=10, help="loader+augment batches per round")
    ap.add_argument("--step-batches", type=int, default=4, help="training steps per round (0: no train-step row)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="default",
                    help="streamed path's decode workers, comma-separated variants (default: data.num_workers's default)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, as in training)")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.stream_workers = [None if w == "default" else int(w) for w in args.workers.split(",")]
    if args._child:
        kind, path, tree = args._child
        print(json.dumps(measure_memory(path, tree, args) if kind == "memory" else measure_speed(tree, args)))
        return
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)", flush=True)
    passed = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"unpacking {args.archive} ...", flush=True)
        with tarfile.open(args.archive) as tar:
            tar.extractall(Path(tmp) / "unpacked", filter="data")
        for n in (int(s) for s in args.sizes.split(",")):
            tree = str(make_tree(Path(tmp) / "unpacked", n, Path(tmp) / f"tree-{n}"))
            for path in ("memory", "stream"):
                row = _child([*passed, "--_child", "memory", path, tree])
                decode = f"{row['decode_s']:.1f} s (then cached)" if row["decode_s"] is not None else "per batch"
                print(f"{path:6s} N={row['images']:6d}  peak RSS main {row['peak_rss_main_mib']:5.0f} MiB, workers' "
                      f"private {row['workers_private_mib']:4.0f} MiB ({row['workers'] if path == 'stream' else 0} workers)  decode {decode}",
                      flush=True)
            speed = _child([*passed, "--_child", "speed", "-", tree])
            pps, cpu = speed["pairs_per_s"], speed["cpu_s_per_1000"]
            for key, value in pps.items():
                variant, row = key.split("|")
                line = f"{variant:9s} N={n:6d}  {row:14s} {value:6.0f} pairs/s"
                line += f"  stream/memory {value / pps[f'memory|{row}']:.2f}x" if variant != "memory" else " " * 21
                workers = speed["workers"][variant] if variant != "memory" else 0
                print(f"{line}  CPU {cpu[key]:5.2f} s/1000 pairs  ({speed['threads']} torch threads, {workers} workers)",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
