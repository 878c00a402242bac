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


def test_sampling(arm: dict[int, tuple[str, np.ndarray]], reference: dict[int, tuple[str, np.ndarray]],
                  p: dict | None, z: float = 1.96) -> dict | None:
    """The test-sampling error of `p` (paired(arm, reference)): how much the differences would move on another
    draw of test images. arm/reference: seed -> (test labels' sha256, (n,) bool top-1 correct per image).
    Per seed SE_s = sd_i(c_arm,i - c_ref,i) / sqrt(n) (paired on the same images, so images both arms get right
    or wrong cancel); for the mean difference over S seeds sd_i(mean_s d_s,i) / sqrt(n): the seeds of a study
    test on the same images, so their sampling errors add up rather than average out (on disjoint image sets
    it equals sqrt(sum_s SE_s^2) / S in expectation). `share` = mean_s SE_s^2 /
    the sample variance of the per-seed differences: the part of the seed-to-seed spread test sampling
    accounts for. None when a seed of `p` lacks per-image records or its arms saw different test labels."""
    if p is None:
        return None
    seeds = [int(s) for s in p["diffs"]]
    per_seed, diffs = {}, []
    for s in seeds:
        if s not in arm or s not in reference or arm[s][0] != reference[s][0] or len(arm[s][1]) != len(reference[s][1]):
            return None
        d = arm[s][1].astype(np.float64) - reference[s][1].astype(np.float64)                       # (n,)
        per_seed[s] = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
        diffs.append(d)
    if len({len(d) for d in diffs}) != 1:
        return None
    mean_d = np.mean(diffs, axis=0)                                                                    # (n,)
    se = float(mean_d.std(ddof=1) / math.sqrt(len(mean_d))) if len(mean_d) > 1 else math.inf
    var_test = float(np.mean([v * v for v in per_seed.values()]))
    var_seed = p["std"] ** 2 if p["seeds"] > 1 else None   # None (JSON null): undefined for one seed
    return {"se_per_seed": {str(s): v for s, v in per_seed.items()}, "se": se, "z": z,
            "low": p["mean"] - z * se, "high": p["mean"] + z * se, "images": len(arm[seeds[0]][1]),
            "var_test": var_test, "var_seed_diffs": var_seed,
            "share": var_test / var_seed if var_seed else None}


def describe_test(t: dict | None, scale: float = 100.0) -> tuple[str, str]:
    """('±0.9', '35 %'): the z·SE half-width in points, and var_test / var_seed_diffs; '–' where unknown."""
    if t is None:
        return "–", "–"
    share = "–" if t["share"] is None else f"{100 * t['share']:.0f} %"
    return f"±{scale * t['z'] * t['se']:.1f}", share
