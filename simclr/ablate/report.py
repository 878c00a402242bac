"""`simclr ablate report DIR`: tables and plots rebuilt from each run's own record (runs/*/arm.json) alone."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from simclr.ablate.selection import write_selection_table
from simclr.ablate.stats import describe, paired, summary
from simclr.ablate.status import finished_records, planned_runs
from simclr.config.schema import ConfigError, suggest
from simclr.utils import pyplot


def collect(root: Path) -> tuple[dict, dict, dict]:
    """-> (values[arm][metric][seed] = value, arm info, baselines[encoder][metric][seed] = value)."""
    entries = list(finished_records(root).values())
    if not entries and (root / "manifest.json").exists():  # a directory from before per-run records
        entries = list(json.loads((root / "manifest.json").read_text())["finished"].values())
    values: dict = defaultdict(lambda: defaultdict(dict))
    baselines: dict = defaultdict(lambda: defaultdict(dict))
    info: dict = {}
    for entry in entries:
        record = json.loads(Path(entry["results"]).read_text())
        info[entry["arm"]] = {"kind": entry["kind"], "meta": entry["meta"]}
        for encoder, protocols in record["metrics"].items():
            target = values[entry["arm"]] if encoder == "simclr" else baselines[encoder]
            for protocol, metrics in protocols.items():
                for metric, v in metrics.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and metric in ACCURACIES:
                        target[f"{protocol}/{metric}"][int(entry["seed"])] = float(v)
    return values, info, baselines


ACCURACIES = ("top1", "top5")


def reference_of(root: Path, values: dict, info: dict) -> str:
    """The spec's reference arm (plan.json; manifest.json for older directories), else base, else pair-crop,
    else the first arm."""
    recorded = [json.loads((root / name).read_text()).get("reference") for name in ("plan.json", "manifest.json")
                if (root / name).is_file()]
    for candidate in (*recorded, "base", "pair-crop"):
        if candidate in values:
            return candidate
    return next(iter(values))


def main_metric(values: dict) -> str:
    keys = sorted({k for arm in values.values() for k in arm})
    for preferred in ("linear/top1",):
        if preferred in keys:
            return preferred
    knn = [k for k in keys if k.startswith("knn_") and k.endswith("/top1")]
    return knn[0] if knn else keys[0]


def _stats(v: dict) -> tuple[float, float, int]:
    s = summary(v)
    return s["mean"], s["std"], s["seeds"]


def table_rows(values: dict, info: dict, baselines: dict, reference: str) -> list[dict]:
    """One row per (arm or floor, metric): mean ± std over seeds, per-seed values, and the paired
    differences against the reference arm and against the random-init floor."""
    metrics = sorted({k for arm in values.values() for k in arm})
    floors = {name: baselines.get(name, {}) for name in ("random_init", "random_init_bn")}
    rows = []
    for arm, per_metric in [*values.items(), *((f"[{b}]", m) for b, m in baselines.items())]:
        for metric in metrics:
            if metric not in per_metric:
                continue
            row = {"arm": arm, "kind": info.get(arm, {}).get("kind", "baseline"), "metric": metric,
                   **summary(per_metric[metric]), "reference": reference,
                   "vs_reference": None if arm == reference else paired(per_metric[metric],
                                                                          values[reference].get(metric, {})),
                   **{f"vs_{name}": None if arm == f"[{name}]" or metric not in floor
                      else paired(per_metric[metric], floor[metric]) for name, floor in floors.items()}}
            rows.append(row)
    return rows


def _flat(p: dict | None, prefix: str) -> dict:
    keys = ("mean", "std", "ci_low", "ci_high", "same_sign", "seeds")
    return {f"{prefix}_{k}": ("" if p is None else p[k]) for k in keys}


def write_tables(root: Path, values: dict, info: dict, baselines: dict, reference: str | None = None,
                 suffix: str = "") -> list[str]:
    reference = reference or reference_of(root, values, info)
    metrics = sorted({k for arm in values.values() for k in arm})
    rows = table_rows(values, info, baselines, reference)
    done, planned = len(finished_records(root)), planned_runs(root)
    flat = [{"arm": r["arm"], "kind": r["kind"], "metric": r["metric"], "mean": r["mean"], "std": r["std"],
             "seeds": r["seeds"], "values": json.dumps(r["values"]), **_flat(r["vs_reference"], "d_ref"),
             **_flat(r["vs_random_init"], "d_rand"), **_flat(r["vs_random_init_bn"], "d_rand_bn")} for r in rows]
    with open(root / f"results{suffix}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]) if flat else ["arm"])
        w.writeheader()
        w.writerows(flat)
    (root / f"results{suffix}.json").write_text(json.dumps({
        "reference": reference, "ci_level": 0.95, "runs_finished": done, "runs_planned": planned,
        "paired": "per-seed differences (arm - reference, arm - random_init, arm - random_init_bn) over the "
                  "seeds both have; "
                  "ci = Student t interval of the mean difference; same_sign = seeds agreeing with the mean's sign",
        "rows": rows}, indent=2))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    by = {(r["arm"], r["metric"]): r for r in rows}
    cell = {k: f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for k, r in by.items()}
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {a}{' (ref)' if a == reference else ''} | " + " | ".join(cell.get((a, m), "–") for m in metrics)
              + " |" for a in arms]
    seeds = max((r["seeds"] for r in rows), default=0)
    main = main_metric(values)
    paired_lines = ["| arm | " + " | ".join(f"Δ {m} vs {reference}" for m in metrics)
                    + f" | Δ {main} vs random init | Δ {main} vs random init (BN recomputed) |",
                    "|---" * (len(metrics) + 3) + "|"]
    paired_lines += [f"| {a} | " + " | ".join(describe(by[(a, m)]["vs_reference"]) if (a, m) in by else "–"
                                               for m in metrics)
                     + "".join(f" | {describe(by[(a, main)][key]) if (a, main) in by else '–'}"
                               for key in ("vs_random_init", "vs_random_init_bn")) + " |"
                     for a in arms if a != reference]
    partial = [f"**Partial: {done} of {planned} runs have finished**; `simclr ablate status {root}` lists the "
               "others. Means and intervals below cover the finished runs only.", ""] if done < planned else []
    md = [f"# Ablation results: {root.name}", "", *partial,
          f"Accuracy in %, mean ± sample std over {seeds} seed(s); `[random_init]` (untouched BN statistics), "
          "`[random_init_bn]` (BN statistics recomputed on training images) and `[raw_pixels]` are the floors.", "",
          *lines, "", f"## Paired differences vs `{reference}` (points)", "",
          "Per seed, arm − reference on the same splits and random streams; mean [95 % t-interval], and how "
          "many seeds agree in sign with the mean.", "", *paired_lines, ""]
    (root / f"results{suffix}.md").write_text("\n".join(md))
    return partial + lines + [""] + paired_lines


def plot_pairwise(root: Path, values: dict, info: dict, metric: str, suffix: str = "",
                  reference: str | None = None) -> Path | None:
    """Heatmap of mean ± std (%) per (1st, 2nd) cell, reference cell outlined; a second panel shows the
    paired difference to the reference (points) with the seeds agreeing in sign."""
    pairs = {a: i["meta"] for a, i in info.items() if i["kind"] == "pair"}
    if not pairs:
        return None
    rows = list(dict.fromkeys(m["first"] for m in pairs.values()))
    cols = list(dict.fromkeys([*(m["second"] for m in pairs.values() if m["second"] in rows)]))
    cols += [c for c in dict.fromkeys(m["second"] for m in pairs.values()) if c not in cols]
    acc = np.full((len(rows), len(cols)), np.nan)
    delta = np.full_like(acc, np.nan)
    labels, dlabels, ref_cell = {}, {}, None
    for arm, m in pairs.items():
        i, j = rows.index(m["first"]), cols.index(m["second"])
        mean, std, _ = _stats(values[arm][metric])
        acc[i, j] = 100 * mean
        labels[i, j] = f"{100 * mean:.1f}\n±{100 * std:.1f}"
        if arm == reference:
            ref_cell = (i, j)
        elif reference in values:
            d = paired(values[arm][metric], values[reference][metric])
            if d is not None:
                delta[i, j] = 100 * d["mean"]
                dlabels[i, j] = f"{100 * d['mean']:+.1f}\n{d['same_sign']}/{d['seeds']}"
    plt = pyplot()
    short = [o.replace("random_", "").replace("gaussian_", "").replace("_jitter", "") for o in cols]
    side = 1.0 * len(cols) + 2.5
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, 0.9 * len(rows) + 2.0))
    lim = np.nanmax(np.abs(delta)) if np.isfinite(delta).any() else 1.0
    panels = ((axes[0], acc, labels, "viridis", None, f"{metric}, % (mean ± std over seeds)"),
              (axes[1], delta, dlabels, "RdBu", (-lim, lim),
               f"Δ vs {reference} (points; seeds agreeing in sign)"))
    for ax, grid, text, cmap, vlim, title in panels:
        im = ax.imshow(grid, cmap=cmap, vmin=vlim[0] if vlim else None, vmax=vlim[1] if vlim else None)
        mid = np.nanmean([np.nanmin(grid), np.nanmax(grid)]) if np.isfinite(grid).any() else 0.0
        for (i, j), t in text.items():
            dark = cmap == "viridis" and grid[i, j] < mid  # white text on the dark half of viridis
            ax.text(j, i, t, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        if ref_cell is not None:
            ax.add_patch(plt.Rectangle((ref_cell[1] - 0.5, ref_cell[0] - 0.5), 1, 1, fill=False, ec="red", lw=2))
            ax.text(ref_cell[1], ref_cell[0] + 0.42, "ref", ha="center", va="bottom", fontsize=6, color="red")
        ax.set_xticks(range(len(cols)), short, rotation=35, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("2nd transformation (branch 1)")
        ax.set_ylabel("1st transformation (branch 1)")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, label="%" if cmap != "RdBu" else "points")
    fig.suptitle("Fig. 5 protocol: shared crop; branch 1 = crop → 1st → 2nd, branch 2 = the crop", fontsize=9)
    fig.tight_layout()
    out = root / f"pairwise_heatmap{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _floors(ax, baselines: dict, metric: str) -> None:
    for (name, per_metric), style in zip(baselines.items(), ("--", ":", "-.")):
        if metric in per_metric:
            ax.axhline(100 * _stats(per_metric[metric])[0], color="tab:red", ls=style, lw=1, label=name)
    ax.legend(fontsize=7, loc="lower right")


def plot_bars(root: Path, values: dict, info: dict, metric: str, kinds=("base", "drop", "named"),
              baselines: dict | None = None, suffix: str = "", reference: str | None = None) -> Path | None:
    """Bars from zero (no truncated axis): mean ± std in %, the reference hatched, floors as lines."""
    arms = [a for a, i in info.items() if i["kind"] in kinds]
    if len(arms) < 2:
        return None
    stats = [_stats(values[a][metric]) for a in arms]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(arms)), 3.6))
    bars = ax.bar(range(len(arms)), [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], capsize=4,
                  color=["tab:gray" if a == reference else "tab:blue" for a in arms])
    for bar, arm in zip(bars, arms):
        if arm == reference:
            bar.set_hatch("//")
    ax.set_xticks(range(len(arms)), [f"{a}\n(ref)" if a == reference else a for a in arms], rotation=35,
                  ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100 * max([s[0] + s[1] for s in stats] + [1e-9]) * 1.15)
    _floors(ax, baselines or {}, metric)
    ax.set_title(f"{metric}, mean ± std over {stats[0][2]} seed(s)", fontsize=9)
    fig.tight_layout()
    out = root / (("drop_one" if any(info[a]["kind"] == "drop" for a in arms) else "arms") + f"{suffix}.png")
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_sweep(root: Path, values: dict, info: dict, metric: str, baselines: dict | None = None,
               suffix: str = "") -> Path | None:
    arms = sorted((i["meta"]["value"], a) for a, i in info.items() if "value" in i["meta"])
    if not arms:
        return None
    stats = [_stats(values[a][metric]) for _, a in arms]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar([v for v, _ in arms], [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], marker="o",
                capsize=4)
    _floors(ax, baselines or {}, metric)
    ax.set_ylim(0, 100 * max(s[0] + s[1] for s in stats) * 1.15)
    ax.set_xlabel(info[arms[0][1]]["meta"].get("param", arms[0][1].split("=")[0]))
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"sweep, mean ± std over {stats[0][2]} seed(s)", fontsize=9)
    fig.tight_layout()
    out = root / f"sweep{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_paired(root: Path, values: dict, baselines: dict, metric: str, reference: str,
                suffix: str = "") -> Path | None:
    """Every arm's (and floor's) paired difference to the reference: mean and 95 % t-interval, zero line."""
    others = [(a, values[a][metric]) for a in values if a != reference and metric in values[a]]
    others += [(f"[{b}]", m[metric]) for b, m in baselines.items() if metric in m]
    diffs = [(a, paired(v, values[reference][metric])) for a, v in others]
    diffs = [(a, d) for a, d in diffs if d is not None]
    if not diffs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(diffs) + 1.4))
    for y, (arm, d) in enumerate(diffs):
        lo, hi = (d["ci_low"], d["ci_high"]) if d["seeds"] > 1 else (d["mean"], d["mean"])
        ax.plot([100 * lo, 100 * hi], [y, y], color="tab:blue", lw=1.5)
        ax.plot(100 * d["mean"], y, "o", color="tab:blue" if d["excludes_zero"] else "tab:gray")
        ax.text(1.01, y, f"{d['same_sign']}/{d['seeds']}", transform=ax.get_yaxis_transform(), va="center",
                fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(diffs)), [a for a, _ in diffs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ {metric} vs {reference} (points), mean and 95 % t-interval over seeds")
    fig.tight_layout()
    out = root / f"paired{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def report(root: Path, metric: str | None = None, reference: str | None = None) -> list[Path]:
    """Tables and plots; plots use `metric` (default: linear/top1, else the first kNN top-1). Paired
    differences are taken against `reference` (default: the spec's); a non-default reference writes
    results_vs_<arm>.* next to the default files instead of replacing them."""
    root = Path(root)
    if not finished_records(root) and not (root / "manifest.json").exists():
        raise ConfigError(f"{root}: no finished runs (runs/*/arm.json); is this an ablation directory "
                          "(output_dir/name)? `simclr ablate status DIR` shows where its runs stand.")
    values, info, baselines = collect(root)
    if reference is not None and reference not in values:
        raise ConfigError(f"--reference: '{reference}' is not an arm of {root}.{suggest(reference, list(values))}")
    ref_suffix = "" if reference is None else "_vs_" + "".join(c if c.isalnum() or c in "-_." else "_"
                                                                for c in reference)
    reference = reference or reference_of(root, values, info)
    lines = write_tables(root, values, info, baselines, reference, ref_suffix)
    known = sorted({k for arm in values.values() for k in arm})
    if metric is not None and metric not in known:
        raise ConfigError(f"--metric: '{metric}' is not in these results.{suggest(metric, known)}")
    suffix = ("" if metric is None else "_" + metric.replace("/", "_")) + ref_suffix
    metric = metric or main_metric(values)
    made = [p for p in (plot_pairwise(root, values, info, metric, suffix, reference),
                        plot_bars(root, values, info, metric, baselines=baselines, suffix=suffix, reference=reference),
                        plot_sweep(root, values, info, metric, baselines=baselines, suffix=suffix),
                        plot_paired(root, values, baselines, metric, reference, suffix)) if p is not None]
    selection = write_selection_table(root)
    print("\n".join(lines) + (f"\nwrote {selection} (search objectives per run)" if selection else ""))
    print(f"wrote {root / f'results{ref_suffix}.csv'}, .md, .json" + "".join(f", {p.name}" for p in made))
    return made
