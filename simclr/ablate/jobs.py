"""How arms become processes: submitit jobs on this machine (`--launcher local`, the cores divided among them)
or SLURM array tasks (`--launcher slurm`, requeued on preemption). `simclr.ablate.launch` decides what runs;
this module only starts it and records each submission in jobs/<key>.json.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths

from simclr.ablate import status
from simclr.ablate.runner import ArmTask, run_arm
from simclr.config.run import load_config
from simclr.config.schema import ConfigError
from simclr.utils import pid_start_ticks, process_started_at, usable_cores


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
        return run_arm(self.task, started=process_started_at())  # a process of its own: its start is the job's


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


def check_slurm(opts: SlurmOptions, spec) -> None:
    for name, value, low in (("--time", opts.time_min, 1), ("--cpus-per-arm", opts.cpus_per_arm, 1),
                             ("--gpus-per-arm", opts.gpus_per_arm, 0), ("--array-parallelism", opts.array_parallelism, 1)):
        if value < low:
            raise ConfigError(f"{name}: {value} is out of range; give an integer >= {low}.")
    t = load_config(spec.base_config, spec.overrides).trainer
    if t.accelerator in ("gpu", "cuda") and t.devices > opts.gpus_per_arm:
        raise ConfigError(f"--gpus-per-arm: the arms train with trainer.accelerator={t.accelerator} on "
                          f"trainer.devices={t.devices}; give --gpus-per-arm {t.devices}.")


def submit_slurm(root: Path, spec, todo: list[ArmTask], opts: SlurmOptions) -> None:
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
        record_submission(root, task, "slurm", job.job_id, folder)
    print(f"submitted {len(jobs)} SLURM job(s) as array {jobs[0].job_id.split('_')[0]} "
          f"({', '.join(f'{k}={v}' for k, v in params.items() if k not in ('setup', 'additional_parameters'))}); "
          f"logs in {folder}")


def record_submission(root: Path, task: ArmTask, launcher: str, job_id: str, folder: Path) -> None:
    paths = JobPaths(folder, job_id=job_id, task_id=0)
    attempt = {"launcher": launcher, "job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "stdout": str(paths.stdout), "stderr": str(paths.stderr)}
    started = pid_start_ticks(int(job_id)) if launcher == "local" else None
    if started is not None:  # the pid's start time: `ablate status` then knows this process from a reused pid
        attempt["pid_start"] = started
    status.add_attempt(root, task.key, attempt)


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


def run_local(root: Path, todo: list[ArmTask], jobs: int, gpus: int) -> None:
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
            record_submission(root, task, "local", job.job_id, folder)
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
