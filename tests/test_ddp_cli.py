"""Two processes per run through the CLI (Lightning's ddp launcher on CPU, gloo), as a user on a 2-GPU node
runs it: one run directory, rank 0 alone writes it, and a Ctrl-C'd run resumed under DDP ends with the
weights and metrics of an uninterrupted 2-process run."""
import json
import os
import signal
import subprocess
import sys

import pytest
from tests.test_interrupt import REPO, SLOW, assert_same_weights, finish, metrics, state, wait_for

DDP = [*SLOW, "trainer.devices=2", "trainer.strategy=ddp"]


def cli(*args, module=True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SIMCLR_RUN_DIR"):  # a clean launch, as from a shell
        env.pop(key, None)
    command = [sys.executable, "-X", "faulthandler", *(["-m", "simclr.cli"] if module else []), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)


@pytest.mark.slow
def test_two_process_run_interrupted_and_resumed_equals_an_uninterrupted_one(tmp_path):
    out = tmp_path / "runs"
    proc = cli("pretrain", *DDP, f"output_dir={out}", "name=full")
    stdout, err = finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert stdout.count("run directory:") == 1  # rank 0 reports, rank 1 is quiet
    record = json.loads((out / "full" / "run.json").read_text())
    assert record["status"] == "finished"
    assert len(record["processes"]) == 2 and len({p["pid"] for p in record["processes"]}) == 2

    # Ctrl-C in the terminal reaches every rank (one process group), after epoch 1's checkpoint
    proc = cli("pretrain", *DDP, f"output_dir={out}", "name=cut")
    wait_for(out / "cut" / "checkpoints" / "last.ckpt", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = finish(proc, 120)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("interrupted:") == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].endswith(f"simclr pretrain --resume {out / 'cut'}")
    record = json.loads((out / "cut" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["epoch"] >= 1
    assert state(out / "cut" / "checkpoints" / "last.ckpt")["epoch"] < 3  # something was left to do

    proc = cli("pretrain", "--resume", out / "cut")  # devices=2 from the run's config: both ranks resume
    _, err = finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((out / "cut" / "run.json").read_text())["status"] == "finished"
    assert_same_weights(out / "full" / "checkpoints" / "last.ckpt", out / "cut" / "checkpoints" / "last.ckpt")
    for key in ("train/loss_epoch", "monitor/knn_top1"):
        assert metrics(out / "full")[key] == metrics(out / "cut")[key], key
    assert sorted(p.name for p in out.iterdir()) == ["cut", "full"]  # no name-2 stubs, no rendezvous left


@pytest.mark.slow
def test_ranks_started_together_join_rank_zeros_directory(tmp_path):
    """torchrun (like srun) starts every rank at once: the others wait for rank 0's announcement."""
    out = tmp_path / "runs"
    proc = cli("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "simclr.cli", "pretrain",
               *SLOW, "trainer.max_epochs=1", "trainer.devices=2", "trainer.strategy=ddp", f"output_dir={out}",
               "name=tr", module=False)
    stdout, err = finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["tr"]  # one directory, the announcement withdrawn
    assert stdout.count("run directory:") == 1
    record = json.loads((out / "tr" / "run.json").read_text())
    assert record["status"] == "finished" and len(record["processes"]) == 2
