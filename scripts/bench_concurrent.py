"""Two ablation arms at once vs one after the other, on this machine's CPU cores.

Runs the same two-arm ablation (digits, two policies, one seed each) through the local launcher three ways,
each into a fresh directory, and prints the wall time of each:

  sequential   --jobs 1: one arm after the other, each on every core
  concurrent   --jobs 2: both at once, the cores divided (cores // 2 threads each, OMP_WAIT_POLICY=PASSIVE)
  old          --jobs 2 as before the cores were divided: both at once, each on every core, OpenMP spinning

and `concurrent (2 jobs x T thread) / sequential = N.NNx` (under 1: running the arms at once pays). Per-arm
train images/s and any contention warning come from each run's run.json.

    python scripts/bench_concurrent.py                      # 30 epochs per arm (aim: 30-60 s per arm alone)
    python scripts/bench_concurrent.py --epochs 3 --no-old  # a quick check that it runs

Run it on an otherwise quiet machine: other users' processes make every row slower, and unevenly.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import yaml

import simclr.ablate.launch as launch
import simclr.ablate.jobs as jobs_module
from simclr.utils import usable_cores

REPO = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, epochs: int) -> Path:
    spec = {"name": "concurrent", "base_config": str(REPO / "configs/digits_cpu.yaml"), "output_dir": str(folder),
            "overrides": [f"trainer.max_epochs={epochs}", "trainer.progress_bar=false", "trainer.knn_monitor_every=0"],
            "seeds": [0], "protocols": ["knn"], "arms": {"named": {"plain": "digits", "rotated": "digits_rotation"}}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(label: str, jobs: int, epochs: int, spinning: bool = False) -> float:
    folder = Path(tempfile.mkdtemp(prefix=f"bench_concurrent_{label}_"))
    spec = write_spec(folder, epochs)
    real = jobs_module.job_environment
    if spinning:  # each job on every core, no wait policy: the comparison row for dividing the cores
        n = str(usable_cores())
        jobs_module.job_environment = lambda jobs, cores=None: {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    start = time.perf_counter()
    try:
        with open(folder / "launcher.log", "w") as out, contextlib.redirect_stdout(out):
            ok = launch.run_ablation(spec, launcher="local", jobs=jobs)
    finally:
        jobs_module.job_environment = real
    wall = time.perf_counter() - start
    if not ok:
        raise SystemExit(f"{label}: the ablation did not finish; see {folder}")
    for run_json in sorted((folder / "concurrent" / "runs").glob("*/run.json")):
        rec = json.loads(run_json.read_text())
        cpu, tp = rec["cpu"], rec["throughput"]
        print(f"    {run_json.parent.name}: {tp['train_img_per_s_mean']} img/s mean, {tp['train_img_per_s_last']} "
              f"last; torch threads {cpu['torch_threads']}, OMP_WAIT_POLICY={cpu['env']['OMP_WAIT_POLICY']}, "
              f"load {cpu['load_avg_start'][0]} -> {cpu['load_avg_end'][0]}"
              + (f"\n      {tp['contention_warning']}" if tp["contention_warning"] else ""))
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="epochs per arm (default 30)")
    p.add_argument("--no-old", action="store_true", help="skip the 2 jobs x every core, spinning row")
    args = p.parse_args()
    cores = usable_cores()
    share = jobs_module.threads_per_job(2, cores)
    print(f"# 2 arms (digits_cpu, {args.epochs} epochs, knn) on {cores} cores")
    rows = [("sequential", f"1 job x {cores} threads", 1, False),
            ("concurrent", f"2 jobs x {share} thread{'s' * (share > 1)}, PASSIVE", 2, False)]
    if not args.no_old:
        rows.append(("old", f"2 jobs x {cores} threads, spinning", 2, True))
    walls = {}
    for label, what, jobs, spinning in rows:
        print(f"{label} ({what}):")
        walls[label] = run(label, jobs, args.epochs, spinning)
        print(f"  wall {walls[label]:.1f} s")
    print(f"concurrent (2 jobs x {share} thread{'s' * (share > 1)}) / sequential = "
          f"{walls['concurrent'] / walls['sequential']:.2f}x")
    if "old" in walls:
        print(f"old (2 jobs x {cores} threads, spinning) / sequential = {walls['old'] / walls['sequential']:.2f}x")


if __name__ == "__main__":
    main()
