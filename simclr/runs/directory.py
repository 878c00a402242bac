"""A run directory on disk: creating it, its run.json record, and finding the run a job should continue.

What the directory holds is spelled in simclr.runs.layout. An existing directory is never overwritten: a new
run gets the next free name (`name-2`, ...).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from simclr.config.files import inside, writable_dir
from simclr.config.schema import ConfigError
from simclr.runs.layout import record_path
from simclr.utils import first_free, process_running, write_json_atomic

log = logging.getLogger("simclr")


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    out = Path(output_dir)
    writable_dir(out, "output_dir")
    base = inside(out / name, out, "name")
    start = 1
    while True:  # two runs starting at the same moment each get their own directory
        path = first_free(lambda n: base if n == 1 else base.with_name(f"{base.name}-{n}"), start)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            start += 1
        except OSError as e:
            raise ConfigError(f"output_dir: cannot create {path} ({e.strerror}).") from None


def read_record(run_dir: Path) -> dict | None:
    """run.json as the dict simclr wrote; None where it is missing, damaged or not an object."""
    try:
        record = json.loads(record_path(run_dir).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # a directory, bytes, broken or deep JSON
        return None
    return record if isinstance(record, dict) else None


def write_status(run_dir: Path, **fields) -> None:
    status_file = record_path(run_dir)
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    status.update(fields)
    if status.get("status") != "failed":
        status.pop("error", None)  # a failed run resumed: the old error no longer describes it
    write_json_atomic(status_file, status)  # a kill -9 mid-write must not leave a run.json resume cannot read


def check_not_running(run_dir: Path) -> None:
    """Refuse to resume a run another live process is training: both would write its checkpoints."""
    status_file = record_path(run_dir)
    if not (status_file.exists() or status_file.is_symlink()):  # a dangling or looping link is damage too
        return
    record = read_record(run_dir)
    if record is None:  # the resume would fail writing its status into it, after loading everything
        raise ConfigError(f"--resume {run_dir}: {status_file} is not the JSON object simclr writes there (damaged or "
                          "edited); restore it, or move it aside and the resume writes a new one.")
    if record.get("status") != "running":
        return
    ranks = record.get("processes") if isinstance(record.get("processes"), list) else []
    for who in [record.get("process"), *ranks]:  # every rank of a multi-process run
        if process_running(who) and who["pid"] != os.getpid():  # this process: a run it left (a retried trial)
            raise ConfigError(f"--resume {run_dir}: process {who['pid']} on {who['host']} is training this run "
                              f"now ({status_file}); a second one would write the same checkpoints. Let it "
                              "finish, or stop it (Ctrl-C) and resume then.")


def finished_metrics(run_dir: Path, max_epochs: int) -> dict[str, float] | None:
    """The metrics of a run that already finished all its epochs, said in one line; None for one with epochs
    left."""
    record = read_record(run_dir) or {}
    epoch = record.get("epoch")
    if record.get("status") != "finished" or not isinstance(epoch, int) or epoch < max_epochs:
        return None
    log.warning("%s: finished all %d epochs already (run.json); nothing to resume, nothing changed", run_dir,
                max_epochs)
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def scheduler_job() -> str | None:
    """The SLURM job this process belongs to (array jobs: `<array job>_<task>`), kept when SLURM requeues it."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def own_run(output_dir: str | Path, name: str) -> Path | None:
    """`--resume auto`: the run this job started earlier (same SLURM job id, so a requeued job finds it), or
    outside SLURM the run named exactly `name`; None when there is none yet (a fresh run starts)."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    job = scheduler_job()
    if job is None:
        base = out / name
        return base if base.is_dir() else None
    same_name = [out / name, *sorted(out.glob(f"{name}-*"), key=lambda p: p.name)]
    mine = [d for d in same_name if d.is_dir() and (read_record(d) or {}).get("slurm_job") == job]
    return mine[-1] if mine else None
