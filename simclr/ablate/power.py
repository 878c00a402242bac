"""Precision of a paired comparison: the smallest true mean difference a study of n seeds would detect.

A paired two-sided t-test at ALPHA on n per-seed differences with standard deviation sd rejects "no
difference" with probability POWER when the true mean difference is at least `mde(sd, n)`. Below that an
interval that covers zero says "could not have seen it", not "there is no effect". Exact, from the
noncentral t (the same arithmetic as statsmodels' TTestPower, which the tests compare against).
"""
from __future__ import annotations

import math
from functools import lru_cache

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 1_000_000   # seeds_needed gives up (None) beyond this: the effect is hopeless to resolve


def power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that a two-sided paired t-test on n seeds rejects at `alpha` when the true mean
    difference is `effect` paired-difference standard deviations (Cohen's d of the differences)."""
    from scipy.stats import nct, t  # scipy comes with scikit-learn
    df = n - 1
    crit = t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n)
    # both tails, as statsmodels counts them; the lower one as sf(crit; -nc), since scipy's cdf(-crit; nc)
    # returns NaN far in that tail for df=1
    return float(nct.sf(crit, df, nc) + nct.sf(crit, df, -nc))


@lru_cache(maxsize=None)
def detectable_effect(n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The effect size (in paired-difference sds) detected with power `target` by n >= 2 seeds."""
    from scipy.optimize import brentq
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 seeds, got {n}")
    high = 1.0
    while power(high, n, alpha) < target:  # n=2 needs d of about 10 (one degree of freedom)
        high *= 2
    return float(brentq(lambda d: power(d, n, alpha) - target, 0.0, high, xtol=1e-10))


def mde(sd: float, n: int) -> float:
    """Minimal detectable mean difference (same units as sd) for n seeds; inf for n < 2 (no test at all)."""
    return math.inf if n < 2 else sd * detectable_effect(n)


def seeds_needed(sd: float, effect: float) -> int | None:
    """The smallest n >= 2 whose paired t-test detects a true mean difference `effect` (same units as sd)
    with power POWER; None if not even MAX_SEEDS would."""
    if effect <= 0:
        raise ValueError(f"the effect to detect must be > 0, got {effect}")
    if sd <= 0:
        return 2
    d = effect / sd
    if power(d, 2) >= POWER:
        return 2
    low, high = 2, 4   # power(d, low) < POWER <= power(d, high): doubling, then bisection (power grows with n)
    while power(d, high) < POWER:
        low, high = high, high * 2
        if high > MAX_SEEDS:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if power(d, mid) < POWER else (low, mid)
    return high


def pooled_sd(comparisons: list[tuple[float, int]]) -> tuple[float, int]:
    """(sd, n) pairs -> the pooled sd sqrt(sum (n-1) sd^2 / sum (n-1)) and its degrees of freedom."""
    dof = sum(n - 1 for _, n in comparisons if n > 1)
    if not dof:
        return math.nan, 0
    return math.sqrt(sum((n - 1) * sd ** 2 for sd, n in comparisons if n > 1) / dof), dof


def test_floor(se: float, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest true difference a comparison on one shared test set detects with power `target`, given the
    test-sampling SE of its mean difference: (z_(1-alpha/2) + z_target) * se. More seeds do not lower it; more
    test images do."""
    from scipy.stats import norm
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(target)) * se)


MDE_NOTE = (f"MDE = minimal detectable effect: the smallest true mean difference a two-sided paired t-test "
            f"(alpha {ALPHA}) on this many seeds, at the observed spread of the differences, detects with "
            f"{POWER:.0%} power; 'within noise, MDE X' means differences smaller than X could not have been "
            "seen, not that there are none. 'resolved' means the seed interval excludes 0 and so does the "
            "test-sampling interval where the runs recorded per-image results (the seeds share one test set, so "
            "its sampling error is not in their spread; 'test floor Y': what no number of seeds gets below).")


def verdict(p: dict | None, test: dict | None = None, scale: float = 100.0) -> str:
    """What a paired comparison (stats.paired) can say, given its test-sampling error (stats.test_sampling,
    None when unknown): 'resolved' when the seed interval excludes zero and so does the test-sampling one;
    'within test-sampling error ±Y' when only the seeds resolve it; 'within noise, MDE X.X' when the seeds do not
    (effects below X.X could not have been seen, so this is no evidence of their absence; ', test floor Y'
    added when known); 'no difference on any seed' for identical arms; 'n=1, no test' without an interval."""
    if p is None:
        return "–"
    if p["seeds"] < 2:
        return "n=1, no test"
    if p["std"] == 0 and p["mean"] == 0:
        return "no difference on any seed"
    floor = f", test floor {scale * test['floor']:.1f}" if test else ""
    if not p["excludes_zero"]:
        return f"within noise, MDE {scale * p['mde']:.1f}{floor}"
    if test and test["low"] <= 0 <= test["high"]:
        return f"within test-sampling error ±{scale * test['z'] * test['se']:.1f}"
    return "resolved"
