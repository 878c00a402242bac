"""`simclr ablate report DIR`: tables and plots rebuilt from each run's own record (runs/*/arm.json) alone."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from simclr.ablate.status import finished_records
from simclr.utils import pyplot


def collect(root: Path) -> tuple[dict, dict, dict]:
    """-> (values[arm][metric] = [per-seed values], arm info, baselines[encoder][metric] = [...])."""
    entries = list(finished_records(root).values())
    if not entries and (root / "manifest.json").exists():  # a directory from before per-run records
        entries = list(json.loads((root / "manifest.json").read_text())["finished"].values())
    values: dict = defaultdict(lambda: defaultdict(list))
    baselines: dict = defaultdict(lambda: defaultdict(list))
    info: dict = {}
    for entry in entries:
        record = json.loads(Path(entry["results"]).read_text())
        info[entry["arm"]] = {"kind": entry["kind"], "meta": entry["meta"]}
        for encoder, protocols in record["metrics"].items():
            target = values[entry["arm"]] if encoder == "simclr" else baselines[encoder]
            for protocol, metrics in protocols.items():
                for metric, v in metrics.items():
                    if isinstance(v, (int, float)) and metric != "weight_decay":
                        target[f"{protocol}/{metric}"].append(float(v))
    return values, info, baselines


def main_metric(values: dict) -> str:
    keys = sorted({k for arm in values.values() for k in arm})
    for preferred in ("linear/top1",):
        if preferred in keys:
            return preferred
    knn = [k for k in keys if k.startswith("knn_") and k.endswith("/top1")]
    return knn[0] if knn else keys[0]


def _stats(v: list[float]) -> tuple[float, float, int]:
    a = np.asarray(v)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def write_tables(root: Path, values: dict, info: dict, baselines: dict) -> list[str]:
    metrics = sorted({k for arm in values.values() for k in arm})
    rows = []
    for arm, per_metric in [*values.items(), *((f"[{b}]", m) for b, m in baselines.items())]:
        for metric in metrics:
            if metric in per_metric:
                mean, std, n = _stats(per_metric[metric])
                rows.append({"arm": arm, "kind": info.get(arm, {}).get("kind", "baseline"), "metric": metric,
                             "mean": mean, "std": std, "seeds": n, "values": per_metric[metric]})
    with open(root / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["arm", "kind", "metric", "mean", "std", "seeds", "values"])
        w.writeheader()
        w.writerows(rows)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    cell = {(r["arm"], r["metric"]): f"{r['mean']:.4f} ± {r['std']:.4f}" for r in rows}
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(cell.get((a, m), "–") for m in metrics) + " |" for a in arms]
    seeds = max((r["seeds"] for r in rows), default=0)
    md = [f"# Ablation results: {root.name}", "", f"mean ± sample std over {seeds} seed(s); "
          "`[random_init]` and `[raw_pixels]` are the floors.", "", *lines, ""]
    (root / "results.md").write_text("\n".join(md))
    return lines


def _plt():
    plt = pyplot()
    return plt


def plot_pairwise(root: Path, values: dict, info: dict, metric: str, suffix: str = "") -> Path | None:
    pairs = {a: i["meta"] for a, i in info.items() if i["kind"] == "pair"}
    if not pairs:
        return None
    ops = list(dict.fromkeys(m["first"] for m in pairs.values()))
    grid = np.full((len(ops), len(ops)), np.nan)
    for arm, m in pairs.items():
        grid[ops.index(m["first"]), ops.index(m["second"])] = np.mean(values[arm][metric])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(ops) + 2.5, 1.0 * len(ops) + 1.5))
    im = ax.imshow(grid, cmap="viridis")
    for i in range(len(ops)):
        for j in range(len(ops)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white")
    short = [o.replace("random_", "").replace("gaussian_", "").replace("_jitter", "") for o in ops]
    ax.set_xticks(range(len(ops)), short, rotation=35, ha="right")
    ax.set_yticks(range(len(ops)), short)
    ax.set_xlabel("2nd transformation")
    ax.set_ylabel("1st transformation")
    ax.set_title(f"{metric} (%), crop underneath on both branches", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out = root / f"pairwise_heatmap{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _floors(ax, baselines: dict, metric: str) -> None:
    for (name, per_metric), style in zip(baselines.items(), ("--", ":")):
        if metric in per_metric:
            ax.axhline(float(np.mean(per_metric[metric])), color="tab:red", ls=style, lw=1, label=name)
    if baselines:
        ax.legend(fontsize=7, loc="lower right")


def plot_bars(root: Path, values: dict, info: dict, metric: str, kinds=("base", "drop", "named"),
              baselines: dict | None = None, suffix: str = "") -> Path | None:
    arms = [a for a, i in info.items() if i["kind"] in kinds]
    if len(arms) < 2:
        return None
    stats = [_stats(values[a][metric]) for a in arms]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(arms)), 3.6))
    ax.bar(range(len(arms)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=4,
           color=["tab:gray" if info[a]["kind"] == "base" else "tab:blue" for a in arms])
    ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
    ax.set_ylabel(metric)
    floor = [float(np.mean(m[metric])) for m in (baselines or {}).values() if metric in m]
    lo = min([s[0] - s[1] for s in stats] + floor)
    ax.set_ylim(max(0, lo - 0.05), min(1, max([s[0] + s[1] for s in stats] + floor) + 0.03))
    _floors(ax, baselines or {}, metric)
    ax.set_title(f"{metric}, mean ± std over {stats[0][2]} seed(s)", fontsize=9)
    fig.tight_layout()
    out = root / (("drop_one" if any(info[a]["kind"] == "drop" for a in arms) else "arms") + f"{suffix}.png")
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_sweep(root: Path, values: dict, info: dict, metric: str, baselines: dict | None = None,
               suffix: str = "") -> Path | None:
    arms = sorted((i["meta"]["value"], a) for a, i in info.items() if i["kind"] == "sweep")
    if not arms:
        return None
    stats = [_stats(values[a][metric]) for _, a in arms]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar([v for v, _ in arms], [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=4)
    _floors(ax, baselines or {}, metric)
    ax.set_xlabel(arms[0][1].split("=")[0])
    ax.set_ylabel(metric)
    ax.set_title(f"sweep, mean ± std over {stats[0][2]} seed(s)", fontsize=9)
    fig.tight_layout()
    out = root / f"sweep{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def report(root: Path, metric: str | None = None) -> list[Path]:
    """Tables and plots; plots use `metric` (default: linear/top1, else the first kNN top-1)."""
    root = Path(root)
    if not finished_records(root) and not (root / "manifest.json").exists():
        from simclr.config.schema import ConfigError
        raise ConfigError(f"{root}: no finished runs (runs/*/arm.json); is this an ablation directory "
                          "(output_dir/name)? `simclr ablate status DIR` shows where its runs stand.")
    values, info, baselines = collect(root)
    lines = write_tables(root, values, info, baselines)
    known = sorted({k for arm in values.values() for k in arm})
    if metric is not None and metric not in known:
        from simclr.config.schema import ConfigError, suggest
        raise ConfigError(f"--metric: '{metric}' is not in these results.{suggest(metric, known)}")
    suffix = "" if metric is None else "_" + metric.replace("/", "_")
    metric = metric or main_metric(values)
    made = [p for p in (plot_pairwise(root, values, info, metric, suffix),
                        plot_bars(root, values, info, metric, baselines=baselines, suffix=suffix),
                        plot_sweep(root, values, info, metric, baselines=baselines, suffix=suffix)) if p is not None]
    print("\n".join(lines))
    print(f"wrote {root / 'results.csv'}, results.md, results.json" + "".join(f", {p.name}" for p in made))
    return made
