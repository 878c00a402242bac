"""Where each arm x seed of an ablation stands, from files each job owns and the scheduler's queue.

    finished     runs/<key>/arm.json exists and names a results.json that exists
    queued       its job waits in the scheduler (SLURM PENDING, or requeued after preemption)
    running      its job runs (SLURM RUNNING, a live local process, or the live process run.json names)
    failed       its last job ended without a record (the error, and the log path to read), or a run started
                 inline raised (run.json: status failed, with the error line)
    cancelled    its last job left the queue before it started (no log): e.g. `scancel` of a pending array
    interrupted  a run directory without a record and no job: the next launch resumes it
    missing      never launched

Files: `plan.json` (the arms, written by the launching command), `jobs/<key>.json` (the submissions of
one arm x seed, written by the launching command only), `runs/<key>/arm.json` (written by that arm's job
only). No file is written by two jobs.
"""
from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from simclr.ablate.records import ATTEMPT_FIELDS, JOBS, RERUN, check_fields, check_job_id, read_arm_record, \
    read_manifest, read_optional, read_plan
from simclr.config.schema import ConfigError
from simclr.runs.layout import record_path
from simclr.utils import pid_start_ticks, process_running, write_json_atomic

RECORD = "arm.json"   # runs/<key>/arm.json: one arm x seed's result, written by its job alone

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
          "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class ArmState:
    key: str
    state: str          # finished | queued | running | failed | cancelled | interrupted | missing
    detail: str = ""    # job id, error line
    log: str = ""       # the job's stderr log, where there is one


def load_plan(root: Path) -> list[dict]:
    plan = read_plan(root)
    if plan is None:
        raise ConfigError(f"{root}: no plan.json; is this an ablation directory (output_dir/name) "
                          "launched by `simclr ablate SPEC`?")
    return plan["runs"]


def planned_runs(root: Path) -> int:
    """How many arm x seed runs the plan holds (0 for studies reported before plan.json existed)."""
    plan = read_plan(root)
    return len(plan["runs"]) if plan else 0


def finished_records(root: Path) -> dict[str, dict]:
    """key -> {arm, kind, seed, meta, run_dir, results} for every arm x seed whose job wrote its record."""
    out = {}
    for path in sorted((Path(root) / "runs").glob(f"*/{RECORD}")):
        record = read_arm_record(path)
        out[path.parent.name] = {**record, "run_dir": str(path.parent), "results": str(record["results"])}
    return out


def finished_entries(root: Path) -> list[dict]:
    """The finished records; for a directory from before per-run records, its manifest.json's entries."""
    entries = list(finished_records(root).values())
    if not entries and (Path(root) / "manifest.json").exists():
        entries = list(read_manifest(root)["finished"].values())
    return entries


def write_index(root: Path) -> dict:
    """manifest.json: an index of the finished records, rebuilt whole by the launching command (the only
    writer), for readers of older ablation directories; the records stay the source of truth."""
    index = {"finished": finished_records(root)}
    write_json_atomic(Path(root) / "manifest.json", index)
    return index


def job_file(root: Path, key: str) -> Path:
    return Path(root) / "jobs" / f"{key}.json"


def _read_jobs(path: Path) -> dict | None:
    jobs = read_optional(path, JOBS, ("attempts",))
    if jobs is not None and not (isinstance(jobs["attempts"], list)
                                 and all(isinstance(a, dict) for a in jobs["attempts"])):
        raise ConfigError(f"{path}: not a submissions record (expected {{'attempts': [{{...}}, ...]}}); {JOBS}")
    for i, attempt in enumerate(jobs["attempts"] if jobs else []):
        check_fields(path, attempt, ATTEMPT_FIELDS, JOBS, f"attempts[{i}].")
        check_job_id(path, i, attempt)
    return jobs


def last_attempt(root: Path, key: str) -> dict | None:
    jobs = _read_jobs(job_file(root, key))
    return jobs["attempts"][-1] if jobs and jobs["attempts"] else None


def add_attempt(root: Path, key: str, attempt: dict) -> None:
    """Append (never replace) a submission of `key`; only the launching command calls this."""
    path = job_file(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = _read_jobs(path) or {"attempts": []}
    jobs["attempts"].append(attempt)
    write_json_atomic(path, jobs)


def update_last_attempt(root: Path, key: str, **fields) -> None:
    path = job_file(root, key)
    jobs = _read_jobs(path)
    jobs["attempts"][-1].update(fields)
    write_json_atomic(path, jobs)


def slurm_queue() -> dict[str, str]:
    """job id ("123" or array task "123_4") -> SLURM state, for this user's jobs in the queue."""
    if shutil.which("squeue") is None:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    return dict(line.split("|", 1) for line in out.stdout.split())


def _process_alive(pid: int, started: int | None = None) -> bool:
    """A live (not zombie) submitit process: the one submitted when its start time was recorded (a reused pid
    is another process), else, for records written before that, one whose command line names submitit."""
    ticks = pid_start_ticks(pid)
    if ticks is None:
        return False
    if isinstance(started, int):
        return ticks == started
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


ERROR_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)|error):? ")


def _job_error(attempt: dict) -> str:
    """The last error line of the job's log (or the in-process error). Read as text: submitit's pickled result
    file is never loaded, since unpickling a study folder from elsewhere could run its code."""
    if attempt.get("error"):
        return attempt["error"]
    log = attempt.get("stderr")
    try:
        with open(log, errors="replace") as fh:
            tail = fh.readlines()[-200:]
    except (OSError, TypeError):
        return "the job ended without a log (cancelled, killed, out of time or memory)"
    errors = [line.strip() for line in tail if ERROR_LINE.match(line)]
    return errors[-1][:300] if errors else "the job ended without writing its record (cancelled, killed, out of time " \
                                            "or memory?)"


def arm_state(root: Path, key: str, queue: dict[str, str], finished: dict[str, dict]) -> ArmState:
    if key in finished:
        return ArmState(key, "finished", finished[key]["results"])
    attempt = last_attempt(root, key)
    run_dir = Path(root) / "runs" / key
    record = (read_optional(record_path(run_dir), RERUN) or {}) if run_dir.exists() else {}
    if record.get("status") == "running" and process_running(record.get("process")):
        who = record["process"]  # e.g. inline in another terminal, or resumed after a failed attempt
        return ArmState(key, "running", f"process {who['pid']} on {who['host']}")
    if attempt is not None and attempt.get("launcher") in ("slurm", "local"):
        job, log = attempt["job_id"], attempt.get("stderr", "")
        if attempt["launcher"] == "slurm" and job in queue:
            return ArmState(key, "queued" if queue[job] in QUEUED else "running", f"SLURM job {job} {queue[job]}", log)
        if attempt["launcher"] == "local" and _process_alive(int(job), attempt.get("pid_start")):
            return ArmState(key, "running", f"local process {job}", log)
        if log and not Path(log).exists() and not run_dir.exists():
            return ArmState(key, "cancelled", f"{attempt['launcher']} job {job} left the queue before it started; "
                                              "relaunching submits it again")
        return ArmState(key, "failed", f"{attempt['launcher']} job {job}: {_job_error(attempt)}", log)
    if attempt is not None and attempt.get("error"):
        return ArmState(key, "failed", attempt["error"], attempt.get("stderr", ""))
    if run_dir.exists():
        if record.get("status") == "failed":  # ran inline (no job file) and raised
            return ArmState(key, "failed", f"{record.get('error', 'failed')}; the next launch runs it again "
                                           "(from its last checkpoint, if it wrote one)")
        return ArmState(key, "interrupted", "no job; the next launch runs it again (from its last "
                                                "checkpoint, if it wrote one)")
    return ArmState(key, "missing")


def arm_states(root: Path, keys: list[str] | None = None) -> list[ArmState]:
    keys = keys if keys is not None else [run["key"] for run in load_plan(root)]
    needs_queue = any((a := last_attempt(root, k)) and a.get("launcher") == "slurm" for k in keys)
    queue, finished = slurm_queue() if needs_queue else {}, finished_records(root)
    return [arm_state(root, key, queue, finished) for key in keys]


def print_status(root: Path) -> list[ArmState]:
    states = arm_states(root)
    width = max(len(s.key) for s in states)
    for s in states:
        line = f"{s.key:<{width}}  {s.state:<11}  {s.detail}"
        if s.state == "failed" and s.log:
            line += f"\n{'':<{width}}  {'':<11}  log: {s.log}"
        print(line)
    counts = {state: sum(s.state == state for s in states) for state in dict.fromkeys(s.state for s in states)}
    print(f"{len(states)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return states
