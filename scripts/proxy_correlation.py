"""Do label-free selection objectives pick augmentation policies as good as labelled selection?

Reads the per-run search objectives an ablation stored with the `selection` protocol (runs/*/selection.json,
via `simclr.ablate.selection.selection_rows`) and, optionally, a search's trials.csv, and reports:

* Spearman rho between each objective (RankMe, rotation prediction, and the labelled validation kNN as the
  reference) and test kNN top-1: per run (arms x seeds) and over per-arm means, each with a seeded
  bootstrap 95 % interval that resamples *arms* (a run's seeds stay together: they share the arm's policy);
* selection regret: the test kNN of the arm each objective picks (highest mean over seeds) against the arm
  validation kNN picks and the best arm on test; and the same choice made seed by seed;
* for search trials (no test numbers): Spearman rho of each label-free objective with validation kNN.

    python scripts/proxy_correlation.py results/cifar_colour_crop_sweep \
        --search docs/searches/cifar_colour_crop/trials.csv --out results/proxy_correlation

Writes OUT/proxy_correlation.json and OUT/proxy_correlation.md; prints the markdown.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from simclr.ablate.selection import selection_rows
from simclr.evaluate.proxies import LABEL_FREE, OBJECTIVES
BOOTSTRAP = 2000


def rho(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])  # Spearman: Pearson of average ranks


def clustered_bootstrap(groups: list[list[tuple[float, float]]], seed: int = 0) -> list[float]:
    """2.5 and 97.5 percentiles of rho over resamples of the groups (arms) with replacement."""
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(groups), len(groups))
        pairs = [p for i in pick for p in groups[i]]
        r = rho([a for a, _ in pairs], [b for _, b in pairs])
        if np.isfinite(r):
            stats.append(r)
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))] if stats else [None, None]


def study_report(root: Path, metric: str) -> dict:
    if not (root / "runs").is_dir():
        sys.exit(f"error: {root}: not an ablation directory (no runs/ folder); give output_dir/name of a study.")
    found = selection_rows(root)
    known = sorted({k for r in found for k, v in r.items() if v is not None} - {"arm", "seed", "kind", *OBJECTIVES})
    if found and metric not in known:
        sys.exit(f"error: --metric {metric}: not in {root}'s results; valid: {', '.join(known)}.")
    rows = [r for r in found if r.get(metric) is not None and all(r.get(k) is not None for k in OBJECTIVES)]
    if not rows:
        sys.exit(f"error: {root}: no runs with every selection objective and {metric} (the spec needs "
                 "protocols: [..., selection], and labelled data for knn_val_top1).")
    seeds_per_arm = {a: sum(r["arm"] == a for r in rows) for a in {r["arm"] for r in rows}}
    if len(set(seeds_per_arm.values())) > 1:
        sys.exit(f"error: {root}: arms have different numbers of finished seeds {seeds_per_arm}; arm means and "
                 "per-seed picks would compare different sets. Finish the study (rerun its spec) first.")
    arms: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        arms[r["arm"]].append(r)
    names = sorted(arms)
    mean = {a: {k: float(np.mean([r[k] for r in arms[a]])) for k in (*OBJECTIVES, metric)} for a in names}
    out: dict = {"study": str(root), "test_metric": metric, "runs": len(rows), "arms": len(names),
                 "seeds": sorted({r["seed"] for r in rows}), "per_arm_mean": mean, "objectives": {}}
    best_test = max(names, key=lambda a: mean[a][metric])
    by_val = max(names, key=lambda a: mean[a]["knn_val_top1"])
    for k in OBJECTIVES:
        per_run = [[(r[k], r[metric]) for r in arms[a]] for a in names]
        per_arm = [[(mean[a][k], mean[a][metric])] for a in names]
        pick = max(names, key=lambda a: mean[a][k])
        seed_regret = []
        for s in out["seeds"]:  # the same choice made from one seed's runs alone
            runs = [r for r in rows if r["seed"] == s]
            chosen = max(runs, key=lambda r: r[k])
            reference = max(runs, key=lambda r: r["knn_val_top1"])
            seed_regret.append(reference[metric] - chosen[metric])
        out["objectives"][k] = {
            "spearman_per_run": rho(*zip(*[p for g in per_run for p in g])),
            "spearman_per_run_ci95": clustered_bootstrap(per_run),
            "spearman_per_arm_mean": rho(*zip(*[g[0] for g in per_arm])),
            "spearman_per_arm_mean_ci95": clustered_bootstrap(per_arm),
            "picks": pick, "picked_test": mean[pick][metric],
            "regret_vs_val_knn_pick": mean[by_val][metric] - mean[pick][metric],
            "regret_vs_best_test_arm": mean[best_test][metric] - mean[pick][metric],
            "per_seed_regret_vs_val_knn_pick": seed_regret}
    arm_sd = [float(np.std([r[metric] for r in arms[a]], ddof=1)) for a in names if len(arms[a]) > 1]
    out |= {"best_test_arm": best_test, "best_test": mean[best_test][metric], "val_knn_pick": by_val,
            "val_knn_pick_test": mean[by_val][metric], "median_seed_sd_of_test_metric": float(np.median(arm_sd))
            if arm_sd else None}
    return out


def search_report(trials_csv: Path) -> dict:
    if not trials_csv.is_file():
        sys.exit(f"error: --search {trials_csv}: no such file (a search's trials.csv).")
    all_rows = list(csv.DictReader(open(trials_csv)))
    missing = {"state", "number", "knn_val_top1", *LABEL_FREE} - set(all_rows[0] if all_rows else {})
    if missing:
        sys.exit(f"error: --search {trials_csv}: not a search's trials.csv (no column {', '.join(sorted(missing))}).")
    rows = [r for r in all_rows if r["state"] == "COMPLETE" and all(r[k] not in ("", None) for k in OBJECTIVES)]
    if len(rows) < 3:
        sys.exit(f"error: --search {trials_csv}: {len(rows)} complete trial(s) with every objective; need 3+.")
    val = [float(r["knn_val_top1"]) for r in rows]
    out = {"trials_csv": str(trials_csv), "trials": len(rows), "objectives": {}}
    for k in LABEL_FREE:
        x = [float(r[k]) for r in rows]
        pick = max(range(len(rows)), key=lambda i: x[i])
        out["objectives"][k] = {"spearman_vs_knn_val_top1": rho(x, val),
                                "ci95": clustered_bootstrap([[(a, b)] for a, b in zip(x, val)]),
                                "picks_trial": int(rows[pick]["number"]), "picked_knn_val_top1": val[pick],
                                "best_knn_val_top1": max(val)}
    return out


def fmt_ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci and ci[0] is not None else "[–]"


def markdown(report: dict) -> str:
    lines = ["# Label-free vs labelled selection", "",
             f"Spearman rho with a seeded bootstrap 95 % interval ({BOOTSTRAP} resamples of arms; a run's seeds "
             "stay together). Regret: test accuracy lost by taking the arm an objective ranks first (mean over "
             "seeds) instead of the arm validation kNN ranks first (labelled selection); per seed: the same "
             "choice made from one seed's runs. Accuracies in points.", ""]
    for s in report["studies"]:
        m = s["test_metric"]
        lines += [f"## {s['study']} ({s['arms']} arms x {len(s['seeds'])} seeds = {s['runs']} runs; test {m})", "",
                  f"best arm on test: {s['best_test_arm']} ({100 * s['best_test']:.1f}); validation kNN picks "
                  f"{s['val_knn_pick']} ({100 * s['val_knn_pick_test']:.1f}); median seed-to-seed sd of an arm's "
                  f"test {m}: " + (f"{100 * sd:.1f}" if (sd := s["median_seed_sd_of_test_metric"]) is not None
                                   else "n/a (one seed)"), "",
                  f"| objective | rho per run | rho of arm means | picks | its test {m} | regret vs val-kNN pick | "
                  "per-seed regrets |", "|---|---|---|---|---|---|---|"]
        for k, o in s["objectives"].items():
            lines.append(f"| {k} | {o['spearman_per_run']:+.2f} {fmt_ci(o['spearman_per_run_ci95'])} | "
                         f"{o['spearman_per_arm_mean']:+.2f} {fmt_ci(o['spearman_per_arm_mean_ci95'])} | {o['picks']} | "
                         f"{100 * o['picked_test']:.1f} | {100 * o['regret_vs_val_knn_pick']:+.1f} | "
                         + ", ".join(f"{100 * r:+.1f}" for r in o["per_seed_regret_vs_val_knn_pick"]) + " |")
        lines.append("")
    for s in report["searches"]:
        lines += [f"## search trials {s['trials_csv']} ({s['trials']} completed; no test numbers)", "",
                  "| objective | rho vs knn_val_top1 | picks trial | its knn_val_top1 | best knn_val_top1 |",
                  "|---|---|---|---|---|"]
        for k, o in s["objectives"].items():
            lines.append(f"| {k} | {o['spearman_vs_knn_val_top1']:+.2f} {fmt_ci(o['ci95'])} | {o['picks_trial']} | "
                         f"{o['picked_knn_val_top1']:.3f} | {o['best_knn_val_top1']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="ablation directories run with the selection protocol")
    ap.add_argument("--search", nargs="*", type=Path, default=[], help="search trials.csv files")
    ap.add_argument("--metric", default="knn_k20/top1", help="test metric (default knn_k20/top1)")
    ap.add_argument("--out", type=Path, help="directory for proxy_correlation.{json,md}")
    args = ap.parse_args(argv)
    report = {"studies": [study_report(s, args.metric) for s in args.studies],
              "searches": [search_report(p) for p in args.search], "bootstrap_resamples": BOOTSTRAP,
              "bootstrap_seed": 0}
    md = markdown(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "proxy_correlation.json").write_text(json.dumps(report, indent=2))
        (args.out / "proxy_correlation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
