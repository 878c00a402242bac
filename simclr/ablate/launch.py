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
A failed arm is reported with its log; it never stops or hides the others.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths

from simclr.ablate import status
from simclr.ablate.runner import ArmTask, ablation_dir, make_tasks, run_arm
from simclr.ablate.spec import generate_arms, load_spec, reference_arm
from simclr.ablate.store import claim, pinned_precision, resolved_record
from simclr.config.files import inside, writable_dir
from simclr.config.run import load_config
from simclr.config.schema import ConfigError, to_dict
from simclr.train import RunInterrupted
from simclr.utils import error_summary, format_duration, usable_cores, write_json_atomic

LAUNCHERS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60                 # per arm; a job past it is signalled, checkpointed and requeued
    gpus_per_arm: int = 0
    cpus_per_arm: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64        # array tasks running at once
    extra: dict = field(default_factory=dict)   # any other sbatch option, e.g. {"account": "x", "qos": "y"}


class ArmJob(submitit.helpers.Checkpointable):
    """What a submitit job runs. On preemption or timeout submitit calls `checkpoint()`, which resubmits this
    same job; `run_arm` then resumes the arm from its last checkpoint. `threads`: torch's intra-op threads in
    the job (the local launcher's share of the cores; None leaves torch's default)."""

    def __init__(self, task: ArmTask, threads: int | None = None):
        self.task, self.threads = task, threads

    def __call__(self) -> dict:
        if self.threads:
            import torch
            torch.set_num_threads(self.threads)
        return run_arm(self.task)


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Each of `jobs` arms at once gets an equal share of the cores (at least one): jobs x threads <= cores."""
    return max(1, (cores or usable_cores()) // jobs)


def job_environment(jobs: int, cores: int | None = None) -> dict[str, str]:
    """What the local launcher exports into each job before it starts Python, so that torch's OpenMP pool is
    sized and behaves right from its first use. With several jobs on shared cores, OMP_WAIT_POLICY=PASSIVE:
    OpenMP's idle threads sleep instead of spinning on cores another job needs (measured: an epoch 2-3x slower
    with two spinning jobs on 2 cores; docs/benchmarks.md)."""
    n = str(threads_per_job(jobs, cores))
    env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    if jobs > 1:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def _prepare(spec_path: str | Path):
    spec = load_spec(spec_path)
    arms = generate_arms(spec)
    root = ablation_dir(spec)
    return spec, arms, root, make_tasks(spec, arms, root)


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


def _check_slurm(opts: SlurmOptions, spec) -> None:
    for name, value, low in (("--time", opts.time_min, 1), ("--cpus-per-arm", opts.cpus_per_arm, 1),
                             ("--gpus-per-arm", opts.gpus_per_arm, 0), ("--array-parallelism", opts.array_parallelism, 1)):
        if value < low:
            raise ConfigError(f"{name}: {value} is out of range; give an integer >= {low}.")
    t = load_config(spec.base_config, spec.overrides).trainer
    if t.accelerator in ("gpu", "cuda") and t.devices > opts.gpus_per_arm:
        raise ConfigError(f"--gpus-per-arm: the arms train with trainer.accelerator={t.accelerator} on "
                          f"trainer.devices={t.devices}; give --gpus-per-arm {t.devices}.")


def _submit_slurm(root: Path, spec, todo: list[ArmTask], opts: SlurmOptions) -> None:
    folder = root / "jobs" / "slurm"
    try:
        ex = submitit.SlurmExecutor(folder=folder, python=shlex.quote(sys.executable))
    except RuntimeError as e:  # no srun on this machine
        raise ConfigError(f"--launcher slurm: {e}") from None
    params = dict(job_name=f"simclr-{spec.name}", time=opts.time_min, cpus_per_task=opts.cpus_per_arm,
                  array_parallelism=opts.array_parallelism, signal_delay_s=min(90, 15 * opts.time_min),
                  additional_parameters={"requeue": True, **opts.extra})
    if os.environ.get("PYTHONPATH"):  # the job imports the same simclr as this command
        params["setup"] = [f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"]
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_arm:
        params["gpus_per_node"] = opts.gpus_per_arm
    if opts.mem_gb:
        params["mem"] = f"{int(opts.mem_gb * 1024)}MB"
    ex.update_parameters(**params)
    try:
        with ex.batch():
            jobs = [ex.submit(ArmJob(task)) for task in todo]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise ConfigError(f"--launcher slurm: sbatch refused the jobs: {lines[-1] if lines else e}") from None
    for task, job in zip(todo, jobs):
        _record_submission(root, task, "slurm", job.job_id, folder)
    print(f"submitted {len(jobs)} SLURM job(s) as array {jobs[0].job_id.split('_')[0]} "
          f"({', '.join(f'{k}={v}' for k, v in params.items() if k not in ('setup', 'additional_parameters'))}); "
          f"logs in {folder}")


def _record_submission(root: Path, task: ArmTask, launcher: str, job_id: str, folder: Path) -> None:
    paths = JobPaths(folder, job_id=job_id, task_id=0)
    status.add_attempt(root, task.key, {
        "launcher": launcher, "job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stdout": str(paths.stdout), "stderr": str(paths.stderr), "result": str(paths.result_pickle)})


@contextmanager
def exported(env: dict[str, str]):
    """`env` in this process's environment while the block runs: submitit's local controller, and through it
    the job's Python, start with a copy of it (so OMP_* are set before torch loads OpenMP there)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_local(root: Path, todo: list[ArmTask], jobs: int, gpus: int) -> None:
    """At most `jobs` arms at once, each in its own submitit process with its own logs (and its own GPU)."""
    folder = root / "jobs" / "local"
    ex = submitit.LocalExecutor(folder=folder, python=shlex.quote(sys.executable))
    ex.update_parameters(timeout_min=60 * 24 * 365)
    jobs = min(jobs, len(todo))  # the cores are shared among the arms that actually run at once
    env = job_environment(jobs)
    threads = int(env["OMP_NUM_THREADS"])
    print(f"{jobs} job(s) at once x {threads} thread(s) on {usable_cores()} core(s)"
          + (", OMP_WAIT_POLICY=PASSIVE" if "OMP_WAIT_POLICY" in env else ""), flush=True)
    waiting, running, gpu_of = list(todo), {}, {}
    while waiting or running:
        while waiting and len(running) < jobs:
            task = waiting.pop(0)
            if gpus:
                gpu_of[task.key] = min(set(range(gpus)) - {gpu_of[k] for k in running})
                ex.update_parameters(gpus_per_node=1, visible_gpus=(gpu_of[task.key],))
            with exported(env):
                job = ex.submit(ArmJob(task, threads))
            _record_submission(root, task, "local", job.job_id, folder)
            running[task.key] = job
            print(f"started {task.key} (process {job.job_id}, log {JobPaths(folder, job.job_id, 0).stderr})",
                  flush=True)
        time.sleep(1)
        for key, job in list(running.items()):
            if job.done():
                del running[key]
                state = status.arm_state(root, key, {}, status.finished_records(root))
                print(f"{key}: {state.state}" + ("" if state.state == "finished" else f" ({state.detail}; "
                                                 f"log {state.log})"), flush=True)


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
    spec, arms, root, tasks = _prepare(spec_path)
    print(f"ablation '{spec.name}': {len(arms)} arms x {len(spec.seeds)} seeds = {len(tasks)} runs -> {root}")
    if dry_run:
        for arm in arms:
            print(f"\n## {arm.name} ({arm.kind})")
            print(arm.policy.to_yaml(), end="")
        return False
    return launch_tasks(spec, arms, root, tasks, Path(spec_path), f"simclr ablate {spec_path}", launcher=launcher,
                        jobs=jobs, slurm=slurm, wait=wait, new_dir=new_dir)


def launch_tasks(spec, arms, root: Path, tasks: list[ArmTask], spec_path: Path, resume: str, launcher: str = "inline",
                 jobs: int = 1, slurm: SlurmOptions | None = None, wait: bool = False, new_dir: bool = False) -> bool:
    """Claim `root` for this spec and these arms, then run what is missing (see run_ablation); `resume` is the
    command that continues after an interrupt. `simclr ablate plan` runs its pilot through here."""
    slurm = slurm or SlurmOptions()
    if launcher != "inline":
        _check_devices(spec, launcher)
    if launcher == "slurm":
        _check_slurm(slurm, spec)
    gpus = _gpus_for_local(spec, jobs) if launcher == "local" else 0
    writable_dir(root, "output_dir")
    claimed = claim(root, resolved_record(spec, arms), spec_path, new_dir)
    if claimed != root:
        root, tasks = claimed, make_tasks(spec, arms, claimed)
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
        _run_local(root, todo, jobs, gpus)
    elif todo:
        _submit_slurm(root, spec, todo, slurm)
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
