"""A direct pretraining job that SLURM requeues mid-run resumes itself: `sbatch --requeue` of
`simclr pretrain --config ... --resume auto`, `scontrol requeue` once its first checkpoint exists, and the
second start continues the same run directory from last.ckpt to the weights of an uninterrupted run.

Runs on the one-node SLURM of scripts/slurm_local_cluster.sh (skipped where SLURM is absent, failed when
CI=true: the `slurm` fixture of tests/test_launch.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_interrupt import assert_same_weights, inproc, state
from tests.test_launch import epochs_by_part, slurm_state, wait_for

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 6
# a tiny run, several seconds per epoch on one thread: the requeue after epoch 1's checkpoint lands mid-run
OVERRIDES = ["seed=0", "policy=digits", "data.image_size=16", "data.train_per_class=80", "data.val_per_class=5",
             "data.test_per_class=10", "data.batch_size=50", "model.width=8", "model.head_hidden_dim=32",
             "model.head_out_dim=16", "optim.name=sgd", "optim.lr=0.5", "optim.warmup_epochs=0",
             f"trainer.max_epochs={EPOCHS}", "trainer.progress_bar=false", "trainer.knn_monitor_every=0"]
CONFIG = REPO / "configs" / "digits_cpu.yaml"


def restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    field = [w for w in out.split() if w.startswith("Restarts=")]
    return int(field[0].split("=")[1]) if field else -1


@pytest.mark.slow
def test_requeued_direct_job_resumes_its_run_from_last_ckpt(tmp_path, slurm):
    out = tmp_path / "runs"
    assert inproc("pretrain", "--config", CONFIG, *OVERRIDES, f"output_dir={out}", "name=full") == 0

    log = tmp_path / "job.log"
    script = tmp_path / "job.sh"
    command = " ".join([sys.executable, "-m", "simclr.cli", "pretrain", "--config", str(CONFIG), "--resume", "auto",
                        *OVERRIDES, f"output_dir={out}", "name=job"])
    script.write_text("#!/bin/bash\necho \"start ${SLURM_RESTART_COUNT:-0}\"\nexec " + command + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, like the reference: bit-identical reductions
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", "--cpus-per-task=1",
                          "-o", str(log), "-D", str(tmp_path), str(script)],
                         capture_output=True, text=True, env=env, check=True).stdout.strip().split(";")[0]
    try:
        last = out / "job" / "checkpoints" / "last.ckpt"
        wait_for(lambda: last.exists() or not slurm_state(job), "the job's first checkpoint")
        assert slurm_state(job) == "RUNNING", log.read_text()[-2000:]
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
        # SLURM holds a requeued batch job for ~2 min (BeginTime); release it as soon as it is pending again
        wait_for(lambda: slurm_state(job) == "PENDING", "the requeued job to be pending")
        record = json.loads((out / "job" / "run.json").read_text())
        assert record["status"] == "interrupted" and record["epoch"] < EPOCHS, record  # requeued mid-run
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, capture_output=True)
        # its second start first: a squeue that answers nothing for a moment must not end the wait (and the
        # finally's scancel then cancel the job before it restarts)
        wait_for(lambda: "start 1" in log.read_text(), "the requeued job to start again", limit_s=600)
        wait_for(lambda: not slurm_state(job), "the requeued job to end", limit_s=600)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    text = log.read_text()
    assert restarts(job) in (1, -1) and "start 1" in text, text[-3000:]  # -1: the job left scontrol's memory

    assert sorted(p.name for p in out.iterdir()) == ["full", "job"]  # one run directory for the job
    record = json.loads((out / "job" / "run.json").read_text())
    assert record["status"] == "finished" and record["epoch"] == EPOCHS, record
    assert record["slurm_job"] == job
    assert f"Restored all states from the checkpoint at {last}" in text, text[-3000:]
    first, second = epochs_by_part(out / "job")  # two training segments, the second continuing the first
    assert first and second and second[0] > 0 and second[-1] == EPOCHS - 1, (first, second)
    assert state(last)["epoch"] == state(out / "full" / "checkpoints" / "last.ckpt")["epoch"]
    assert_same_weights(out / "full" / "checkpoints" / "last.ckpt", last)
