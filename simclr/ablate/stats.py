"""Paired statistics for ablations: arms of one seed share their data splits and random streams, so the
per-seed difference arm - reference is the right unit (Student's t over seeds, not two independent means).
"""
from __future__ import annotations

import math

import numpy as np

from simclr.ablate.power import mde, test_floor, verdict


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
    half = t_quantile(n - 1, level) * std / math.sqrt(n) if n > 1 else None   # one seed: no interval (null)
    sign = 1 if mean > 0 else -1 if mean < 0 else 0
    out = {"diffs": {str(s): float(x) for s, x in zip(seeds, d)}, "mean": mean, "std": std, "seeds": n,
           "ci_low": None if half is None else mean - half, "ci_high": None if half is None else mean + half,
           "level": level,
           "same_sign": int((np.sign(d) == sign).sum()) if sign else 0,
           "excludes_zero": bool(half is not None and (mean - half > 0 or mean + half < 0)),
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
    Per seed SE_s = sd_i(d_s,i) / sqrt(n), d_s,i = c_arm,s,i - c_ref,s,i (paired on the same images, so images
    both arms get right or wrong cancel). For the mean difference over S seeds: sd_i(mean_s d_s,i) / sqrt(n) —
    the seeds test on the same images, so their sampling errors do not average out (on disjoint image samples
    it equals sqrt(sum_s SE_s^2) / S in expectation). `floor`: the smallest effect detectable against it
    (power.test_floor). `share`: the part of the seed-to-seed variance of the differences that test sampling
    explains — only the seed x image part, (1/(S-1)) sum_s var_i(d_s,i - mean_s d_s,i) / n, reaches that
    spread; the part the seeds share does not. None when a seed of `p` lacks per-image records or its arms
    saw different test labels."""
    if p is None:
        return None
    seeds = [int(s) for s in p["diffs"]]
    diffs = []
    for s in seeds:
        if s not in arm or s not in reference or arm[s][0] != reference[s][0] or len(arm[s][1]) != len(reference[s][1]):
            return None
        diffs.append(arm[s][1].astype(np.float64) - reference[s][1].astype(np.float64))            # (n,)
    if len({len(d) for d in diffs}) != 1 or len(diffs[0]) < 2:
        return None
    d = np.stack(diffs)                                                                             # (S, n)
    n = d.shape[1]
    se = float(d.mean(axis=0).std(ddof=1) / math.sqrt(n))
    per_seed = {str(s): float(row.std(ddof=1) / math.sqrt(n)) for s, row in zip(seeds, d)}
    within = float(((d - d.mean(axis=0)).var(axis=1, ddof=1) / n).sum() / (len(seeds) - 1)) if len(seeds) > 1 else None
    var_seed = p["std"] ** 2 if p["seeds"] > 1 else None   # None (JSON null): undefined for one seed
    return {"se_per_seed": per_seed, "se": se, "z": z, "low": p["mean"] - z * se, "high": p["mean"] + z * se,
            "floor": test_floor(se), "images": n, "var_test_within_seeds": within, "var_seed_diffs": var_seed,
            "share": within / var_seed if within is not None and var_seed else None}


def describe_test(t: dict | None, scale: float = 100.0) -> tuple[str, str, str]:
    """('±0.9', '1.3', '35 %'): the z·SE half-width and the test floor in points, and the share of the seed
    variance from test sampling; '–' where unknown."""
    if t is None:
        return "–", "–", "–"
    share = "–" if t["share"] is None else f"{100 * t['share']:.0f} %"
    return f"±{scale * t['z'] * t['se']:.1f}", f"{scale * t['floor']:.1f}", share
