"""`simclr ablate SPEC [--launcher inline|local|slurm]`: run every arm x seed through `runner.run_arm`.

    simclr ablate spec.yaml                                  # this process, one arm after another
    simclr ablate spec.yaml --launcher local --jobs 2        # 2 arms at once on this machine (submitit),
                                                             # each on cores // 2 threads
    simclr ablate spec.yaml --launcher slurm --partition gpu --time 240 --gpus-per-arm 1 --cpus-per-arm 8 \
        --array-parallelism 16                               # one SLURM array task per arm x seed
    simclr ablate status ablations/NAME                      # queued / running / finished / failed (+ log)
    simclr ablate report ablations/NAME                      # tables and plots from the finished records

Relaunching the same command submits only what is missing: finished arms are skipped, arms whose job is
queued or running are left alone, failed, cancelled and interrupted ones are resubmitted and resume from their last
checkpoint. SLURM jobs ask for `--requeue` and carry submitit's checkpoint hook: a preempted or timed-out
job is requeued and its arm continues from `checkpoints/last.ckpt` (written at every epoch end).
A failed arm is reported with its log; it never stops or hides the others. While one launch of a study is
choosing, running or submitting its arms, a second one refuses, naming it (simclr.ablate.lock).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path


from simclr.ablate import status
from simclr.ablate.jobs import SlurmOptions, check_slurm, run_local, submit_slurm
from simclr.ablate.runner import ArmTask, ablation_dir, make_tasks, run_arm
from simclr.ablate.arms import generate_arms, reference_arm
from simclr.ablate.spec import AblationSpec, check_data, load_spec
from simclr.ablate.lock import study_lock
from simclr.ablate.store import claim, pinned_precision, resolved_record, study_folder
from simclr.config.files import inside, writable_dir
from simclr.config.run import load_config
from simclr.config.schema import ConfigError, to_dict
from simclr.train import RunInterrupted
from simclr.utils import error_summary, format_duration, write_json_atomic

LAUNCHERS = ("inline", "local", "slurm")


def _write_plan(spec, arms, root: Path, tasks: list[ArmTask]) -> None:
    """policies/ and plan.json; `store.claim` has already matched the spec this directory ran (and wrote
    spec.yaml), so an existing policy file already holds this very policy and is left as it is."""
    (root / "policies").mkdir(exist_ok=True)
    for arm in arms:
        policy_file = inside(root / "policies" / f"{arm.name}.yaml", root, f"arm '{arm.name}'")
        if not policy_file.exists():
            policy_file.write_text(arm.policy.to_yaml())
    plan = {"reference": reference_arm(spec, arms),  # what the report takes paired differences against
            "runs": [{"key": t.key, "arm": t.arm, "kind": t.kind, "seed": t.seed} for t in tasks]}
    write_json_atomic(root / "plan.json", plan)


def _check_devices(spec, launcher: str) -> None:
    t = load_config(spec.base_config, spec.overrides).trainer
    if t.devices > 1 or t.num_nodes > 1:
        raise ConfigError(f"trainer.devices={t.devices}, trainer.num_nodes={t.num_nodes}: --launcher {launcher} runs "
                          "each arm as one process on one device; give the arms 1 device and run more arms at once.")


def _gpus_for_local(spec, jobs: int) -> int:
    """GPUs on this machine the local jobs share out, one per running arm (0: the arms train on CPU)."""
    import torch
    if load_config(spec.base_config, spec.overrides).trainer.accelerator in ("cpu", "mps"):
        return 0
    n = torch.cuda.device_count()
    if n and jobs > n:
        raise ConfigError(f"--jobs: {jobs} arms at once but {n} CUDA device(s); give --jobs {n} or fewer.")
    return n


def _run_inline(root: Path, tasks: list[ArmTask], todo: list[ArmTask]) -> None:
    started, done_here = time.time(), 0
    for i, task in enumerate(tasks, 1):
        if task not in todo:
            continue
        remaining = len(todo) - done_here
        eta = f", ETA {format_duration((time.time() - started) / done_here * remaining)}" if done_here else ""
        print(f"[{i}/{len(tasks)}] {task.key}{eta}", flush=True)
        status.add_attempt(root, task.key, {"launcher": "inline", "pid": os.getpid(),
                                            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
        try:
            run_arm(task)
        except Exception as e:  # noqa: BLE001 - one failed arm must not stop or hide the others
            traceback.print_exc()
            line = error_summary(e)
            status.update_last_attempt(root, task.key, error=line)
            print(f"[{i}/{len(tasks)}] {task.key} FAILED: {line}", file=sys.stderr, flush=True)
        status.write_index(root)
        done_here += 1


def _wait(root: Path, keys: list[str], max_poll_s: float = 30.0) -> None:
    last, poll_s = None, 1.0
    while True:
        states = status.arm_states(root, keys)
        active = [s for s in states if s.state in ("queued", "running")]
        summary = ", ".join(f"{sum(s.state == x for s in states)} {x}" for x in dict.fromkeys(s.state for s in states))
        if summary != last:
            print(f"[{time.strftime('%H:%M:%S')}] {summary}", flush=True)
            last = summary
        if not active:
            return
        time.sleep(poll_s)
        poll_s = min(max_poll_s, poll_s * 1.3)  # quick for short jobs, a light touch on squeue for long ones


def run_ablation(spec_path: str | Path, dry_run: bool = False, launcher: str = "inline", jobs: int = 1,
                 slurm: SlurmOptions | None = None, wait: bool = False, new_dir: bool = False) -> bool:
    """Launch what is missing; returns True when every arm x seed has finished (then the report is written).
    new_dir: if the spec's directory ran a different spec, continue in `name-N` instead of refusing."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: unknown '{launcher}'; valid: {', '.join(LAUNCHERS)}.")
    if jobs < 1:
        raise ConfigError(f"--jobs: {jobs} is out of range; give an integer >= 1.")
    if jobs > 1 and launcher != "local":
        raise ConfigError(f"--jobs {jobs}: runs arms at once only with --launcher local "
                          "(slurm: --array-parallelism).")
    return launch_spec(load_spec(spec_path), Path(spec_path), f"simclr ablate {spec_path}", dry_run=dry_run,
                       launcher=launcher, jobs=jobs, slurm=slurm, wait=wait, new_dir=new_dir)


def launch_spec(spec: AblationSpec, spec_path: Path, resume: str, dry_run: bool = False, **options) -> bool:
    """run_ablation for a spec already loaded (`simclr search` builds its final comparison's in memory); `spec_path`
    is the file it is recorded as (copied to the study's spec.yaml), `resume` the command that continues it;
    `options`: launch_tasks' launcher, jobs, slurm, wait, new_dir."""
    arms = generate_arms(spec)
    root = ablation_dir(spec)
    tasks = make_tasks(spec, arms, root)
    print(f"ablation '{spec.name}': {len(arms)} arms x {len(spec.seeds)} seeds = {len(tasks)} runs -> {root}")
    if dry_run:
        for arm in arms:
            print(f"\n## {arm.name} ({arm.kind})")
            if "method" in arm.meta:  # the method axis: this arm's method and its own overrides
                extra = spec.method_overrides.get(arm.meta["method"], ())
                print(f"method: {arm.meta['method']}" + (f" ({', '.join(extra)})" if extra else ""))
            print(arm.policy.to_yaml(), end="")
        return False
    return launch_tasks(spec, arms, root, tasks, spec_path, resume, **options)


def launch_tasks(spec, arms, root: Path, tasks: list[ArmTask], spec_path: Path, resume: str, launcher: str = "inline",
                 jobs: int = 1, slurm: SlurmOptions | None = None, wait: bool = False, new_dir: bool = False) -> bool:
    """Claim `root` for this spec and these arms, then run what is missing (see run_ablation); `resume` is the
    command that continues after an interrupt. `simclr ablate plan` runs its pilot through here."""
    slurm = slurm or SlurmOptions()
    check_data(spec, str(spec_path))
    if launcher != "inline":
        _check_devices(spec, launcher)
    if launcher == "slurm":
        check_slurm(slurm, spec)
    gpus = _gpus_for_local(spec, jobs) if launcher == "local" else 0
    writable_dir(root, "output_dir")
    record = resolved_record(spec, arms)
    chosen = study_folder(root, record, spec_path, new_dir)
    if chosen != root:
        root, tasks = chosen, make_tasks(spec, arms, chosen)
    # held until the arms are submitted (slurm) or have ended (inline, local): a second launch of this study
    # would otherwise start arms this one is starting
    with study_lock(root, resume, f"Wait for it to end (follow it with `simclr ablate status {root}`), or stop it "
                                  "and relaunch."):
        claim(root, record, spec_path, new_dir=False)
        return _launch(spec, arms, root, tasks, resume, launcher, jobs, slurm, wait, gpus)


def _launch(spec, arms, root: Path, tasks: list[ArmTask], resume: str, launcher: str, jobs: int,
            slurm: SlurmOptions, wait: bool, gpus: int) -> bool:
    pinned = pinned_precision(root, to_dict(load_config(spec.base_config, spec.overrides).trainer))
    if pinned:  # a study recorded before `auto`: its remaining arms run at the precision its first ones did
        tasks = [replace(t, overrides=(*t.overrides, *pinned)) for t in tasks]
    _write_plan(spec, arms, root, tasks)
    keys = [t.key for t in tasks]
    states = {s.key: s for s in status.arm_states(root, keys)}
    todo = [t for t in tasks if states[t.key].state in ("missing", "failed", "cancelled", "interrupted")]
    for i, t in enumerate(tasks, 1):
        s = states[t.key]
        if s.state == "finished":
            print(f"[{i}/{len(tasks)}] {t.key}: finished earlier, skipped")
        elif s.state in ("queued", "running"):
            print(f"[{i}/{len(tasks)}] {t.key}: {s.state} ({s.detail}), left alone")
    if todo and launcher == "inline":
        try:
            _run_inline(root, tasks, todo)
        except RunInterrupted as e:  # the whole ablation resumes, not just this run
            e.args = (f"{e.signal_name} during the ablation; resume with: {resume}",)
            raise
    elif todo and launcher == "local":
        run_local(root, todo, jobs, gpus)
    elif todo:
        submit_slurm(root, spec, todo, slurm)
    if launcher == "slurm" and wait or launcher == "local":
        _wait(root, keys)
    return _conclude(root, keys, launcher, wait)


def _conclude(root: Path, keys: list[str], launcher: str, wait: bool) -> bool:
    index = status.write_index(root)
    states = status.arm_states(root, keys)
    active = [s for s in states if s.state in ("queued", "running")]
    if active and launcher == "slurm" and not wait:
        print(f"{len(active)} run(s) queued or running. Follow them with `simclr ablate status {root}`; "
              f"relaunch this command to submit what is missing; `simclr ablate report {root}` when done.")
        return False
    failed = [s for s in states if s.state != "finished"]
    if index["finished"]:
        from simclr.ablate.report import report
        report(root)
    for s in failed:
        print(f"{s.key}: {s.state}: {s.detail}" + (f"\n    log: {s.log}" if s.log else ""), file=sys.stderr)
    if failed:
        busy = sum(s.state in ("queued", "running") for s in failed)
        print(f"{len(failed)} of {len(states)} run(s) did not finish"
              + ("; the report covers the finished ones. " if index["finished"] else ". ")
              + (f"{busy} of them are still queued or running (left alone): `simclr ablate status {root}` follows "
                 f"them, `simclr ablate report {root}` when they end. " if busy else "")
              + ("Relaunch the same command to resubmit the others." if len(failed) > busy else ""), file=sys.stderr)
    return not failed
