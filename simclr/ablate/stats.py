"""Paired statistics for ablations: arms of one seed share their data splits and random streams, so the
per-seed difference arm - reference is the right unit (Student's t over seeds, not two independent means).
"""
from __future__ import annotations

import math

import numpy as np

from simclr.ablate.power import mde, verdict


def summary(per_seed: dict[int, float]) -> dict:
    """mean, sample std and n of one arm's per-seed values."""
    a = np.asarray(list(per_seed.values()), dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "seeds": len(a),
            "values": {str(k): float(v) for k, v in sorted(per_seed.items())}}


def t_quantile(df: int, level: float = 0.95) -> float:
    from scipy.stats import t  # scipy comes with scikit-learn
    return float(t.ppf(0.5 + level / 2, df))


def paired(arm: dict[int, float], reference: dict[int, float], level: float = 0.95) -> dict | None:
    """Per-seed differences arm - reference over the seeds both have: their mean, sample std, a `level`
    t-interval for the mean difference, how many seeds agree in sign with the mean, the minimal detectable
    effect of this many seeds at this spread (power.mde; None for one seed) and a verdict (power.verdict).
    None when no seed is shared."""
    seeds = sorted(set(arm) & set(reference))
    if not seeds:
        return None
    d = np.array([arm[s] - reference[s] for s in seeds], dtype=np.float64)
    mean = float(d.mean())
    n = len(d)
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile(n - 1, level) * std / math.sqrt(n) if n > 1 else math.inf
    sign = 1 if mean > 0 else -1 if mean < 0 else 0
    out = {"diffs": {str(s): float(x) for s, x in zip(seeds, d)}, "mean": mean, "std": std, "seeds": n,
           "ci_low": mean - half, "ci_high": mean + half, "level": level,
           "same_sign": int((np.sign(d) == sign).sum()) if sign else 0,
           "excludes_zero": bool(n > 1 and (mean - half > 0 or mean + half < 0)),
           "mde": mde(std, n) if n > 1 else None}
    return {**out, "verdict": verdict(out)}


def describe(p: dict | None, scale: float = 100.0, unit: str = "") -> str:
    """'+1.2 [−0.3, +2.7], 3/3 seeds' (points when scale=100)."""
    if p is None:
        return "–"
    ci = f"[{scale * p['ci_low']:+.1f}, {scale * p['ci_high']:+.1f}]" if p["seeds"] > 1 else "[n=1]"
    return f"{scale * p['mean']:+.1f}{unit} {ci}, {p['same_sign']}/{p['seeds']}"
