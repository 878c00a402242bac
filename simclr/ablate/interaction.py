"""The method axis of a study (spec `methods:`): arms named `<policy arm>@<method>`, each compared with its own
method's reference, and the method x policy interaction - does removing colour cost SimCLR more than BYOL?

Interaction of policy arm A between methods M and N, per seed s (the arms of a seed share data splits and every
op's random stream, whatever the method):  I_s = (A@M_s - ref@M_s) - (A@N_s - ref@N_s),  a paired difference of
differences; its mean gets a Student t interval over seeds like any paired difference (stats.paired), and, where
runs recorded per-image results, the test-sampling error of the same contrast over the shared test images.
"""
from __future__ import annotations

import numpy as np

from simclr.ablate.power import verdict
from simclr.ablate.stats import describe, describe_test, paired, test_sampling


def method_of(arm: str, info: dict) -> str | None:
    return (info.get(arm, {}).get("meta") or {}).get("method")


def policy_arm(arm: str, info: dict) -> str:
    return (info.get(arm, {}).get("meta") or {}).get("policy_arm", arm)


def reference_for(arm: str, reference: str, info: dict) -> str:
    """`arm`'s reference: the study's reference policy arm run with `arm`'s own method."""
    method = method_of(arm, info)
    if method is None or method_of(reference, info) is None:
        return reference
    return f"{policy_arm(reference, info)}@{method}"


def methods_in(values: dict, info: dict) -> list[str]:
    """The methods of these arms in the registry's order (simclr first), whatever order the runs finished in."""
    from simclr.config.methods import METHODS
    found = {m for arm in values if (m := method_of(arm, info)) is not None}
    return [m for m in METHODS if m in found]


def _contrast(correct: dict, arm: str, ref: str, metric: str) -> dict:
    """seed -> (test labels' sha256, per-image c_arm - c_ref as floats) where both runs recorded it alike."""
    out = {}
    for seed, (sha, hits) in correct.get(arm, {}).get(metric, {}).items():
        other = correct.get(ref, {}).get(metric, {}).get(seed)
        if other is not None and other[0] == sha and len(other[1]) == len(hits):
            out[seed] = (sha, hits.astype(np.float64) - other[1].astype(np.float64))
    return out


def interaction_rows(values: dict, info: dict, reference: str, correct: dict | None = None) -> list[dict]:
    """One row per (policy arm, method pair, metric): the paired difference of the two methods' differences vs
    their own reference, with its test-sampling error where per-image records exist."""
    correct = correct or {}
    methods = methods_in(values, info)
    ref_policy = policy_arm(reference, info)
    policies = list(dict.fromkeys(policy_arm(a, info) for a in values if method_of(a, info) is not None))
    rows = []
    for pol in (p for p in policies if p != ref_policy):
        for i, m in enumerate(methods):
            for n in methods[i + 1:]:
                arms = {k: f"{pol}@{k}" for k in (m, n)}
                refs = {k: f"{ref_policy}@{k}" for k in (m, n)}
                if not all(a in values for a in (*arms.values(), *refs.values())):
                    continue
                for metric in sorted(set.intersection(*(set(values[a]) for a in (*arms.values(), *refs.values())))):
                    drop = {k: {s: values[arms[k]][metric][s] - values[refs[k]][metric][s]
                                for s in set(values[arms[k]][metric]) & set(values[refs[k]][metric])} for k in (m, n)}
                    p = paired(drop[m], drop[n])
                    if p is None:
                        continue
                    t = test_sampling(_contrast(correct, arms[m], refs[m], metric),
                                      _contrast(correct, arms[n], refs[n], metric), p)
                    p["verdict"] = verdict(p, t)
                    rows.append({"arm": pol, "methods": [m, n], "metric": metric,
                                 "drop": {k: paired(values[arms[k]][metric], values[refs[k]][metric]) for k in (m, n)},
                                 "interaction": p, "interaction_test": t})
    return rows


def interaction_lines(rows: list[dict], reference: str) -> list[str]:
    """Markdown: each method's change vs its own reference, and their difference with its interval."""
    if not rows:
        return []
    lines = ["## Method x policy interaction (points)", "",
             f"Per seed, (arm − `{reference.split('@')[0]}`) under the first method minus the same under the second: "
             "a paired difference of differences over the seeds (the arms of a seed share data splits and random "
             "streams). Negative: the arm costs the first method more. Test sampling as above, on the same contrast "
             "per test image.", "",
             "| arm | metric | methods (M − N) | Δ under M | Δ under N | interaction M − N [95 % t-interval] | "
             "test-sampling ±1.96·SE | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["metric"].endswith("/top1"):
            continue
        m, n = r["methods"]
        lines.append(f"| {r['arm']} | {r['metric']} | {m} − {n} | {describe(r['drop'][m])} | {describe(r['drop'][n])} "
                     f"| {describe(r['interaction'])} | {describe_test(r['interaction_test'])[0]} | "
                     f"{r['interaction']['verdict']} |")
    return lines + [""]
