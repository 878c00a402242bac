"""`run_arm(task)`: one arm x seed through the same `train.run` and `evaluate_run` a user calls.

Every launcher (this process, local processes, SLURM jobs; see `simclr.ablate.launch`) executes exactly
this function. It is idempotent: a finished arm is only re-evaluated if its record is missing, an
interrupted one resumes from `checkpoints/last.ckpt`, and one killed before its first checkpoint is moved
aside (never deleted) and started again. Its result is a record in the run's own directory,
`runs/<arm>-seed<s>/arm.json`, written by this job alone; reports are built from those records, so jobs
running at the same time never write the same file.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from simclr import train
from simclr.ablate.selection import SELECTION, SELECTION_FILE, score_run
from simclr.ablate.arms import Arm
from simclr.ablate.spec import AblationSpec, method_overrides
from simclr.ablate.status import RECORD
from simclr.config.run import load_config
from simclr.evaluate import evaluate_run
from simclr.runs.directory import read_record
from simclr.runs.layout import last_checkpoint
from simclr.utils import first_free, write_json_atomic


@dataclass(frozen=True)
class ArmTask:
    """Everything one arm x seed job needs; plain data, so it pickles into a SLURM job."""
    root: str                   # the ablation directory
    cwd: str                    # where the spec's relative paths resolve (the submitting directory)
    arm: str
    kind: str
    meta: dict
    seed: int
    base_config: str
    overrides: tuple[str, ...]
    protocols: tuple[str, ...]
    baselines: bool             # raw-pixel / random-init floors: once per seed, they do not depend on the arm

    @property
    def key(self) -> str:
        return f"{self.arm}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / "runs" / self.key


def ablation_dir(spec: AblationSpec) -> Path:
    return Path(spec.output_dir) / spec.name


def make_tasks(spec: AblationSpec, arms: list[Arm], root: Path) -> list[ArmTask]:
    return [ArmTask(str(root.resolve()), os.getcwd(), arm.name, arm.kind, dict(arm.meta), seed, spec.base_config,
                    method_overrides(spec, arm.meta.get("method")), tuple(spec.protocols),
                    baselines=arm.name == arms[0].name)
            for seed in spec.seeds for arm in arms]


def _train(task: ArmTask) -> Path:
    run_dir = task.run_dir
    if run_dir.exists():
        if last_checkpoint(run_dir).exists():
            status = (read_record(run_dir) or {}).get("status")
            if status != "finished":
                print(f"    resuming interrupted run {run_dir}", flush=True)
                return train.run(resume=run_dir).run_dir
            return run_dir
        # killed before its first checkpoint: set aside (never deleted) and start the arm again
        run_dir.rename(first_free(lambda n: run_dir.with_name(f"{task.key}.incomplete-{n}")))
    policy = Path(task.root) / "policies" / f"{task.arm}.yaml"
    cfg = load_config(task.base_config, [*task.overrides, f"seed={task.seed}", f"name={task.key}",
                                         f"output_dir={run_dir.parent}", f"policy={policy}"])
    result = train.run(cfg)
    if result.run_dir != run_dir:
        raise RuntimeError(f"expected run directory {run_dir}, got {result.run_dir}")
    return run_dir


def run_arm(task: ArmTask, started: float | None = None) -> dict:
    """Train (or resume) and evaluate one arm x seed; write and return its record. `started`: when the arm's work
    began (a job process's own start, imports included); now by default."""
    os.chdir(task.cwd)  # a job starts wherever its scheduler puts it; the spec's paths are relative to here
    started = time.time() if started is None else started
    run_dir = _train(task)
    result = evaluate_run(run_dir, [p for p in task.protocols if p != SELECTION], baselines=task.baselines,
                          quiet=True)
    if SELECTION in task.protocols:  # search objectives (train/val only), for label-free vs labelled checks
        score_run(run_dir)
    record = {"arm": task.arm, "kind": task.kind, "seed": task.seed, "meta": task.meta,
              "results": str(Path(result["eval_dir"]).resolve().relative_to(run_dir.resolve()) / "results.json"),
              **({"selection": SELECTION_FILE} if SELECTION in task.protocols else {}),
              "job": {"host": os.uname().nodename, "pid": os.getpid(), "started": started, "ended": time.time(),
                      "slurm_job_id": os.environ.get("SLURM_JOB_ID")}}
    write_json_atomic(run_dir / RECORD, record)
    return record
