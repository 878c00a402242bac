"""A search's last step: the best policy against the base on the test split, as an ordinary two-arm ablation
(`final.seeds`, per-seed paired differences), run through the ablation launcher in this process."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

from simclr.ablate.launch import launch_spec
from simclr.ablate.records import read_results
from simclr.ablate.spec import spec_from_dict
from simclr.ablate.stats import paired
from simclr.ablate.status import finished_entries
from simclr.config.schema import ConfigError
from simclr.search.spec import SearchSpec


def paired_stats(base: list[float], other: list[float]) -> dict:
    """Per-seed differences other - base with the ablation report's statistics (`simclr.ablate.stats.paired`:
    mean, 95 % t-interval), plus how many seeds go each way."""
    p = paired(dict(enumerate(other)), dict(enumerate(base)))
    d = np.array(list(p["diffs"].values()))
    return {"n": p["seeds"], "differences": d.tolist(), "mean": p["mean"], "ci95": [p["ci_low"], p["ci_high"]],
            "positive": int((d > 0).sum()), "negative": int((d < 0).sum()),
            "sign_agreement": float(max((d > 0).sum(), (d < 0).sum()) / p["seeds"])}


def final_spec(spec: SearchSpec, root: Path, best_number: int) -> dict:
    """The comparison's ablation spec as data; it lies in `root`, so its base_config is relative to that folder,
    as every spec file's is."""
    return {"name": f"final-trial-{best_number:04d}",
            "base_config": os.path.relpath(Path(spec.base_config).absolute(), root.resolve()),
            "overrides": list(spec.overrides), "seeds": list(spec.final.seeds),
            "protocols": list(spec.final.protocols), "output_dir": str(root),
            "arms": {"named": {"base": str(root / "base_policy.yaml"),
                               "best": str(root / "policies" / f"final-best-{best_number:04d}.yaml")}}}


def run_final(spec: SearchSpec, root: Path, best_number: int) -> None:
    """Train and evaluate what is missing of the comparison. Its spec is also written beside it, for the record
    and for `simclr ablate` to rerun by hand, but handed to the launcher as data, not read back."""
    raw = final_spec(spec, root, best_number)
    spec_path = root / f"{raw['name']}.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    fresh = not spec_path.exists()
    if fresh or spec_path.read_text() != text:  # simclr's own file: one written when base_config was
        spec_path.write_text(text)             # relative to the working directory is brought up to date
    if fresh:  # the best policy as it was when the comparison began: a later report cannot change its arm
        (root / "policies" / f"final-best-{best_number:04d}.yaml").write_text((root / "best_policy.yaml").read_text())
    try:
        ablation = spec_from_dict(raw, root)
    except ConfigError as e:  # named as a spec file's errors are
        raise ConfigError(f"{spec_path}: {e}") from None
    launch_spec(ablation, spec_path, f"simclr ablate {spec_path}")


def final_comparison(spec: SearchSpec, root: Path, best_number: int, run: bool) -> dict | None:
    """best vs base on the test split (`run`: train and evaluate what is missing first), from the finished
    arms' records; None until some have finished."""
    name = f"final-trial-{best_number:04d}"
    if run:
        run_final(spec, root, best_number)
    if not (root / name / "manifest.json").exists():  # written once the comparison's launch has concluded
        return None
    per_arm: dict = {"base": {}, "best": {}}
    for entry in finished_entries(root / name):  # each arm's record and results read once, checked
        record = read_results(Path(entry["results"]))["metrics"]["simclr"]
        for protocol, metrics in record.items():
            if isinstance(metrics, dict) and "top1" in metrics:
                per_arm[entry["arm"]].setdefault(f"{protocol}/top1", {})[entry["seed"]] = metrics["top1"]
    out = {"directory": str(root / name), "metrics": {}}
    for metric, base in per_arm["base"].items():
        best = per_arm["best"].get(metric, {})
        seeds = sorted(set(base) & set(best))
        if seeds:
            out["metrics"][metric] = {"seeds": seeds, "base": [base[s] for s in seeds], "best": [best[s] for s in seeds],
                                      **paired_stats([base[s] for s in seeds], [best[s] for s in seeds])}
    (root / "comparison.json").write_text(json.dumps(out, indent=2))
    return out
