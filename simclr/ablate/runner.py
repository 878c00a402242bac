"""`run_ablation(spec)`: every arm x seed through the same `train.run` and `evaluate_run` a user calls.

Resumable: `manifest.json` records each finished arm; a killed runner skips those, resumes an
interrupted arm from its last checkpoint (or moves a run that never checkpointed aside — nothing is
deleted), and continues. Each arm keeps its run directory and results.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from simclr import train
from simclr.ablate.spec import AblationSpec, Arm, generate_arms, load_spec, reference_arm
from simclr.config.run import load_config
from simclr.evaluate import evaluate_run
from simclr.utils import first_free


def ablation_dir(spec: AblationSpec) -> Path:
    return Path(spec.output_dir) / spec.name


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"finished": {}}


def _save(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _train_arm(spec: AblationSpec, arm: Arm, seed: int, root: Path) -> Path:
    key = f"{arm.name}-seed{seed}"
    policy_path = root / "policies" / f"{arm.name}.yaml"
    run_dir = root / "runs" / key
    if run_dir.exists():
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            status = json.loads((run_dir / "run.json").read_text()).get("status")
            if status != "finished":
                print(f"    resuming interrupted run {run_dir}")
                return train.run(resume=run_dir).run_dir
            return run_dir
        # killed before its first checkpoint: set aside (never deleted) and start the arm again
        run_dir.rename(first_free(lambda n: run_dir.with_name(f"{key}.incomplete-{n}")))
    cfg = load_config(spec.base_config, [*spec.overrides, f"seed={seed}", f"name={key}",
                                         f"output_dir={root / 'runs'}", f"policy={policy_path}"])
    result = train.run(cfg)
    if result.run_dir != run_dir:
        raise RuntimeError(f"expected run directory {run_dir}, got {result.run_dir}")
    return run_dir


def run_ablation(spec_path: str | Path, dry_run: bool = False) -> Path:
    spec = load_spec(spec_path)
    arms = generate_arms(spec)
    root = ablation_dir(spec)
    jobs = [(arm, seed) for seed in spec.seeds for arm in arms]
    print(f"ablation '{spec.name}': {len(arms)} arms x {len(spec.seeds)} seeds = {len(jobs)} runs -> {root}")
    if dry_run:
        for arm in arms:
            print(f"\n## {arm.name} ({arm.kind})")
            print(arm.policy.to_yaml(), end="")
        return root
    (root / "policies").mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(Path(spec_path).read_text())
    for arm in arms:
        (root / "policies" / f"{arm.name}.yaml").write_text(arm.policy.to_yaml())
    manifest_path = root / "manifest.json"
    manifest = _manifest(manifest_path)
    manifest["reference"] = reference_arm(spec, arms)  # what report() takes paired differences against
    started, done_here = time.time(), 0
    for i, (arm, seed) in enumerate(jobs, 1):
        key = f"{arm.name}-seed{seed}"
        if key in manifest["finished"] and Path(manifest["finished"][key]["results"]).exists():
            print(f"[{i}/{len(jobs)}] {key}: finished earlier, skipped")
            continue
        remaining = len(jobs) - i + 1
        eta = f", ETA {_fmt((time.time() - started) / done_here * remaining)}" if done_here else ""
        print(f"[{i}/{len(jobs)}] {key}{eta}", flush=True)
        run_dir = _train_arm(spec, arm, seed, root)
        first_of_seed = arm.name == arms[0].name  # baselines once per seed: they do not depend on the arm
        result = evaluate_run(run_dir, spec.protocols, baselines=first_of_seed, quiet=True)
        manifest["finished"][key] = {"arm": arm.name, "kind": arm.kind, "seed": seed, "meta": arm.meta,
                                     "run_dir": str(run_dir), "results": str(result["eval_dir"] / "results.json")}
        _save(manifest_path, manifest)
        done_here += 1
    from simclr.ablate.report import report
    report(root)
    return root
