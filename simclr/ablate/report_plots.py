"""The plots of `simclr ablate report`: Fig. 5 heatmaps, per-arm bars with the floors, sweeps, and paired
differences against the reference. Inputs are report.collect's per-arm, per-seed values."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simclr.ablate.interaction import methods_in, reference_for
from simclr.ablate.arms import FIG5_TRANSFORMS
from simclr.ablate.stats import paired, summary
from simclr.utils import pyplot


def _stats(v: dict) -> tuple[float, float, int]:
    s = summary(v)
    return s["mean"], s["std"], s["seeds"]


def plot_pairwise(root: Path, values: dict, info: dict, metric: str, suffix: str = "",
                  reference: str | None = None) -> Path | None:
    """Heatmap of mean ± std (%) per (1st, 2nd) cell, reference cell outlined; a second panel shows the
    paired difference to the reference (points) with the seeds agreeing in sign."""
    pairs = {a: i["meta"] for a, i in info.items() if i["kind"] == "pair"}
    if not pairs:
        return None
    # one order for rows and columns (Fig. 4's, then any other op by name), so single transformations lie on
    # the diagonal whatever order the runs finished in
    order = [*FIG5_TRANSFORMS, *sorted({m[k] for m in pairs.values() for k in ("first", "second")} - set(FIG5_TRANSFORMS))]
    rows = [o for o in order if any(m["first"] == o for m in pairs.values())]
    cols = [o for o in order if o in rows] + [o for o in order if o not in rows and any(m["second"] == o
                                                                                        for m in pairs.values())]
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
    if ax.get_legend_handles_labels()[0]:  # results without floors have nothing to name
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


def _base_point(root: Path, info: dict, param: str) -> list[tuple[float, str]]:
    """The base arm as a sweep point when the sweep's values leave out the base's own value (the base is then
    its own arm): its value of `param` (op.param) read from its recorded policy."""
    base = next((a for a, i in info.items() if i["kind"] == "base" and "value" not in i["meta"]), None)
    policy_file = root / "policies" / f"{base}.yaml"
    if base is None or not policy_file.is_file():
        return []
    from simclr.augment import load_policy
    op_name, name = param.split(".", 1)
    for view in load_policy(policy_file).views:
        for op in view:
            if op.name == op_name and isinstance(getattr(op.params, name, None), (int, float)):
                return [(float(getattr(op.params, name)), base)]
    return []


def plot_sweep(root: Path, values: dict, info: dict, metric: str, baselines: dict | None = None,
               suffix: str = "") -> Path | None:
    arms = sorted((i["meta"]["value"], a) for a, i in info.items() if "value" in i["meta"])
    if not arms:
        return None
    arms = sorted(arms + _base_point(root, info, info[arms[0][1]]["meta"].get("param", "")))
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
                suffix: str = "", info: dict | None = None) -> Path | None:
    """Every arm's (and floor's) paired difference to the reference (with a method axis, its own method's
    reference arm): mean and 95 % t-interval, zero line."""
    ref_of = {a: reference_for(a, reference, info or {}) for a in values}
    others = [(a, values[a][metric], ref_of[a]) for a in values if a != ref_of[a] and metric in values[a]]
    others += [(f"[{b}]", m[metric], reference) for b, m in baselines.items() if metric in m]
    diffs = [(a, paired(v, values[ref][metric])) for a, v, ref in others if ref in values]
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
    shown = f"{reference.split('@')[0]}@<its method>" if methods_in(values, info or {}) else reference
    ax.set_xlabel(f"Δ {metric} vs {shown} (points), mean and 95 % t-interval over seeds")
    fig.tight_layout()
    out = root / f"paired{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_methods(root: Path, values: dict, info: dict, interaction: list[dict], metric: str,
                 baselines: dict | None = None, suffix: str = "", reference: str | None = None) -> Path | None:
    """With a method axis, two panels. Left: each method's accuracy per policy arm (mean ± std) with the floors,
    so a small drop can be read against how much the method learned at all. Right: each arm's change vs its
    method's reference (mean and 95 % t-interval over seeds), one bar per method."""
    rows = [r for r in interaction if r["metric"] == metric]
    if not rows:
        return None
    drops: dict = {}
    for r in rows:
        for m in r["methods"]:
            drops.setdefault(r["arm"], {})[m] = r["drop"][m]
    methods = methods_in(values, info)
    ref_policy = reference.split("@")[0] if reference else None
    policy_arms = sorted(dict.fromkeys(info[a]["meta"].get("policy_arm", a) for a in values if a in info),
                         key=lambda p: p != ref_policy)  # the reference first, the rest in spec order
    cell = {(info[a]["meta"].get("policy_arm"), info[a]["meta"].get("method")): a for a in values if a in info}
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9, 3.2 * len(policy_arms)), 3.8))
    width = 0.8 / len(methods)

    def offsets(k: int, n: int) -> list[float]:
        return [i + (k - (len(methods) - 1) / 2) * width for i in range(n)]

    for k, m in enumerate(methods):
        stats = [_stats(values[cell[p, m]][metric]) if (p, m) in cell else (np.nan, 0.0, 0) for p in policy_arms]
        left.bar(offsets(k, len(policy_arms)), [100 * s[0] for s in stats], width,
                 yerr=[100 * s[1] for s in stats], capsize=3, label=m)
    left.set_xticks(range(len(policy_arms)), policy_arms, rotation=20, ha="right")
    left.set_ylabel(f"{metric} (%)")
    left.set_title("accuracy per method, mean ± std over seeds", fontsize=9)
    _floors(left, baselines or {}, metric)
    top = max([b.get_height() for b in left.patches if np.isfinite(b.get_height())] + [1.0])
    left.set_ylim(0, top * 1.45)  # room above the bars for the legend
    left.legend(fontsize=7, loc="upper center", ncol=3)
    arms = list(drops)
    for k, m in enumerate(methods):
        ds = [drops[a].get(m) for a in arms]
        err = [[100 * (d["mean"] - d["ci_low"]) if d and d["ci_low"] is not None else 0 for d in ds],
               [100 * (d["ci_high"] - d["mean"]) if d and d["ci_high"] is not None else 0 for d in ds]]
        right.bar(offsets(k, len(arms)), [100 * d["mean"] if d else np.nan for d in ds], width, yerr=err,
                  capsize=3, label=m)
    right.axhline(0, color="black", lw=0.8)
    right.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
    right.set_ylabel(f"Δ {metric} (points)")
    right.set_title("change vs the method's own reference arm,\nmean and 95 % t-interval over seeds", fontsize=9)
    fig.tight_layout()
    out = root / f"methods{suffix}.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
