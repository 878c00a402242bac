"""Accuracy parity of bf16 autocast + channels_last against fp32: the CPU demo (configs/cifar10_cpu.yaml) trained
at both precisions on the same seeds, evaluated alike (kNN + linear probe, encoder only), compared per seed.

    python scripts/bf16_parity.py [--seeds 0 1 2] [--jobs 2] [--out results/bf16_parity]

Runs `--jobs` trainings at once, the cores divided between them (OMP_NUM_THREADS, OMP_WAIT_POLICY=PASSIVE),
each in its own process so those settings take effect before torch starts. Writes parity.json (every run's
accuracies, train time and the paired differences bf16 - fp32 with 95 % t-intervals and minimal detectable
effects) and parity.md. Run it on a machine nothing else uses: its train times are part of the result.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cifar10_cpu.yaml"
PRECISIONS = {"fp32": ["trainer.precision=32", "trainer.channels_last=false"],
              "bf16": ["trainer.precision=bf16-mixed", "trainer.channels_last=true"]}
METRICS = (("knn_k20", "top1"), ("knn_k200", "top1"), ("linear", "top1"))


def one_run(out: Path, precision: str, seed: int) -> dict:
    """Train and evaluate one (precision, seed) in this process; returns its record."""
    from simclr.config.run import load_config
    from simclr.evaluate import evaluate_run
    from simclr.train import run

    cfg = load_config(CONFIG, [*PRECISIONS[precision], f"seed={seed}", f"name={precision}-seed{seed}",
                               f"output_dir={out / 'runs'}", "trainer.progress_bar=false"])
    start = time.perf_counter()
    result = run(cfg)
    train_s = time.perf_counter() - start
    metrics = evaluate_run(result.run_dir, protocols=["knn", "linear"], baselines=False, quiet=True)["metrics"]
    return {"precision": precision, "seed": seed, "train_seconds": train_s, "run_dir": str(result.run_dir),
            "loss": result.metrics.get("train/loss_epoch"),
            **{f"{m}/{k}": metrics["simclr"][m][k] for m, k in METRICS}}


def _child(out: Path, precision: str, seed: int, jobs: int) -> dict:
    from simclr.ablate.jobs import job_environment  # the local launcher's share of the cores, PASSIVE when shared
    env = {**os.environ, **job_environment(jobs)}
    record = out / f"{precision}-seed{seed}.json"
    if not record.exists():
        subprocess.run([sys.executable, __file__, "--one", precision, str(seed), "--out", str(out)], env=env,
                       check=True)
    return json.loads(record.read_text())


def report(records: list[dict], out: Path) -> None:
    from simclr.ablate.power import mde
    from simclr.ablate.stats import describe, paired

    rows = []
    for metric in [f"{m}/{k}" for m, k in METRICS]:
        by = {p: {r["seed"]: r[metric] for r in records if r["precision"] == p} for p in PRECISIONS}
        p = paired(by["bf16"], by["fp32"])
        rows.append({"metric": metric, "fp32": by["fp32"], "bf16": by["bf16"], "bf16_minus_fp32": p,
                     "mde": mde(p["std"], p["seeds"]) if p and p["seeds"] > 1 else None})
    times = {p: [r["train_seconds"] for r in records if r["precision"] == p] for p in PRECISIONS}
    speed = sum(times["fp32"]) / sum(times["bf16"])
    (out / "parity.json").write_text(json.dumps({"config": str(CONFIG.relative_to(REPO)), "runs": records,
                                                 "rows": rows, "train_seconds": times,
                                                 "fp32_over_bf16_train_time": speed}, indent=2))
    lines = ["# bf16 autocast + channels_last vs fp32: the CPU demo", "",
             f"`{CONFIG.relative_to(REPO)}`, seeds {sorted({r['seed'] for r in records})}; paired difference "
             "bf16 − fp32 per seed in points, mean [95 % t-interval], seeds agreeing in sign; MDE = the smallest "
             "difference these seeds detect with 80 % power.", "",
             "| metric | fp32 mean | bf16 mean | Δ bf16 − fp32 | MDE |", "|---|---|---|---|---|"]
    for r in rows:
        mean = {p: 100 * sum(r[p].values()) / len(r[p]) for p in PRECISIONS}
        mde_text = "–" if r["mde"] is None else f"{100 * r['mde']:.1f}"
        lines.append(f"| {r['metric']} | {mean['fp32']:.2f} | {mean['bf16']:.2f} | {describe(r['bf16_minus_fp32'])} "
                     f"| {mde_text} |")
    lines += ["", f"Train time ({len(records)} runs, an fp32 and a bf16 run of one seed at a time, the cores divided "
              f"between them): fp32 {sum(times['fp32']):.0f} s, bf16 {sum(times['bf16']):.0f} s — fp32 / bf16 = "
              f"{speed:.2f}x (scripts/bench_train.py measures the step alone)", ""]
    (out / "parity.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bf16_parity")
    ap.add_argument("--one", nargs=2, metavar=("PRECISION", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        precision, seed = args.one[0], int(args.one[1])
        record = one_run(args.out, precision, seed)
        (args.out / f"{precision}-seed{seed}.json").write_text(json.dumps(record, indent=2))
        return
    todo = [(p, s) for s in args.seeds for p in PRECISIONS]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda ps: _child(args.out, *ps, args.jobs), todo))
    report(records, args.out)


if __name__ == "__main__":
    main()
