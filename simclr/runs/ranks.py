"""One run directory for every process of a multi-process run.

Launchers that start one process per device (torchrun, `srun`, Lightning's own `ddp`, which re-runs the
command once per extra device) each start the whole `simclr pretrain` command. Rank 0 creates and names
the run directory and alone writes what is in it; the other ranks join that directory:
- under Lightning's launcher through the environment (rank 0 sets SIMCLR_RUN_DIR before it starts them);
- under torchrun or srun, where every rank starts at once, through a rendezvous file that rank 0 writes in
  `<output_dir>/.rendezvous/` once the directory holds its config (hand-written: neither launcher offers a
  store before the process group exists, and the process group is Lightning's to create).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl

from simclr.config.schema import ConfigError
from simclr.runs.directory import write_status
from simclr.utils import process_started_at, this_process, write_json_atomic

RUN_DIR_ENV, RESUMED_ENV = "SIMCLR_RUN_DIR", "SIMCLR_RUN_RESUMED"
JOIN_TIMEOUT_S = float(os.environ.get("SIMCLR_JOIN_TIMEOUT", 600))


def launcher_rank() -> int:
    """This process's global rank as its launcher set it (0 for a single process)."""
    env = os.environ
    if "RANK" in env:  # torchrun, torch.distributed.launch
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:  # srun tasks
        return int(env["SLURM_PROCID"])
    if "LOCAL_RANK" in env:  # Lightning's ddp launcher sets no RANK in its children (and unsets WORLD_SIZE after)
        node, local = int(env.get("NODE_RANK", "0")), int(env["LOCAL_RANK"])
        return local if node == 0 else max(1, local + node)  # only "is it 0" matters here
    return 0


def _launch_key() -> str:
    """What all ranks of one launch share and the next launch does not (hashed into the rendezvous name)."""
    env = os.environ
    parts = [env.get(k, "") for k in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT",
                                      "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def rendezvous_file(output_dir: Path) -> Path:
    return Path(output_dir) / ".rendezvous" / f"{_launch_key()}.json"


def announce(run_dir: Path, output_dir: Path, resumed: bool) -> Path | None:
    """Rank 0: tell the other ranks where the run is and whether it continues from last.ckpt (environment
    for children it starts, a file for peers started beside it). Returns the file for `withdraw`."""
    os.environ[RUN_DIR_ENV], os.environ[RESUMED_ENV] = str(Path(run_dir).resolve()), str(int(resumed))
    if not _multi_process_launch():
        return None
    path = rendezvous_file(output_dir)
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, {"run_dir": str(Path(run_dir).resolve()), "resumed": resumed, "written": time.time(),
                             "by": this_process()})
    return path


def withdraw(path: Path | None) -> None:
    """Rank 0, training over: the announcement goes (a later launch must not join this run by mistake)."""
    os.environ.pop(RUN_DIR_ENV, None)
    os.environ.pop(RESUMED_ENV, None)
    if path is not None:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:  # other launches' announcements are still there
            pass


def _multi_process_launch() -> bool:
    env = os.environ
    return int(env.get("WORLD_SIZE", "1")) > 1 or (int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in env)


def join(output_dir: Path) -> tuple[Path, bool]:
    """Rank > 0: (the run directory rank 0 chose for this launch, whether it continues from last.ckpt); waits
    for the announcement up to SIMCLR_JOIN_TIMEOUT s."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]), os.environ.get(RESUMED_ENV) == "1"
    path, started, t0 = rendezvous_file(output_dir), process_started_at(), time.time()
    while time.time() - t0 < JOIN_TIMEOUT_S:
        try:
            note = json.loads(path.read_text())
            # a file left by an earlier launch with the same key is older than this process
            if note["written"] >= started - 60 and Path(note["run_dir"]).is_dir():
                return Path(note["run_dir"]), bool(note["resumed"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    raise ConfigError(f"rank {launcher_rank()}: rank 0 did not announce a run directory in {path} within "
                      f"{JOIN_TIMEOUT_S:.0f} s; is output_dir on a file system every node shares?")


def all_processes() -> list[dict]:
    """Every rank's process record (this_process()), gathered over the process group once it exists."""
    import torch.distributed as dist
    mine = this_process()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


class RankRecord(pl.Callback):
    """run.json's `processes`: every rank's process once the process group exists (rank 0 writes it), so a
    resume refuses while any rank of the run is alive."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_fit_start(self, trainer, pl_module) -> None:
        processes = all_processes()  # a collective: every rank calls it
        if trainer.is_global_zero and len(processes) > 1:
            write_status(self.run_dir, processes=processes)
