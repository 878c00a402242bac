"""Really interrupted runs (SIGINT after epoch 1, kill -9 in epoch 2) resume to the weights and metrics of an
uninterrupted run; so does a killed ablation arm. Every run here is a `python -m simclr.cli` subprocess, so the
signal reaches the same code a user's Ctrl-C does."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simclr.cli import main
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
# 3 epochs of 16 steps each: long enough that a kill after epoch 1's checkpoint lands inside epoch 2
SLOW = [*TINY, "trainer.max_epochs=3", "data.train_per_class=80", "data.batch_size=50",
        "trainer.log_every_n_steps=1"]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def inproc(*args) -> int:
    """The CLI in this process (saves a ~20 s interpreter start), on one thread like the subprocesses, so
    float reductions match bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def start(*args):
    return subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "simclr.cli", *map(str, args)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)


def wait_for(path: Path, proc, timeout=300):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)


def finish(proc, timeout):
    """proc.communicate(timeout); past it, the process's Python stacks (faulthandler, on SIGABRT) go into the
    failure, so a hang seen once in CI says where it hung."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"no exit within {timeout} s; its stacks:\n{err[-6000:]}") from None


def state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path):
    sa, sb = state(a)["state_dict"], state(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["metrics"]


@pytest.mark.slow
def test_sigint_and_kill9_then_resume_equal_an_uninterrupted_run(tmp_path):
    out = tmp_path / "runs"
    assert inproc("pretrain", *SLOW, f"output_dir={out}", "name=full") == 0

    # Ctrl-C once epoch 1's checkpoint exists
    proc = start("pretrain", *SLOW, f"output_dir={out}", "name=sigint")
    wait_for(out / "sigint" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, 120)
    assert proc.returncode == 130, err[-2000:]
    assert f"simclr pretrain --resume {out / 'sigint'}" in err.strip().splitlines()[-1]
    status = json.loads((out / "sigint" / "run.json").read_text())
    assert status["status"] == "interrupted" and status["epoch"] >= 1
    assert inproc("pretrain", "--resume", out / "sigint") == 0

    # kill -9 inside epoch 2: nothing graceful happens; last.ckpt still holds a completed epoch
    proc = start("pretrain", *SLOW, f"output_dir={out}", "name=killed")
    wait_for(out / "killed" / "checkpoints" / "last.ckpt", proc)
    proc.kill()
    finish(proc, 60)
    assert state(out / "killed" / "checkpoints" / "last.ckpt")["epoch"] < 2  # something was left to do
    assert json.loads((out / "killed" / "run.json").read_text())["status"] == "running"  # no chance to say more
    assert inproc("pretrain", "--resume", out / "killed") == 0

    for name in ("sigint", "killed"):
        assert_same_weights(out / "full" / "checkpoints" / "last.ckpt", out / name / "checkpoints" / "last.ckpt")
        assert state(out / name / "checkpoints" / "last.ckpt")["epoch"] == 2
        m_full, m_cut = metrics(out / "full"), metrics(out / name)
        for key in ("train/loss_epoch", "monitor/knn_top1"):
            assert m_full[key] == m_cut[key], (name, key)
        assert not list((out / name / "checkpoints").glob("*.partial"))
    assert sorted(p.name for p in out.iterdir()) == ["full", "killed", "sigint"]  # no name-2 stubs


@pytest.mark.slow
def test_killed_ablation_arm_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    def spec(folder: Path) -> Path:
        folder.mkdir()
        path = folder / "spec.yaml"
        path.write_text(f"""
name: t
base_config: {REPO / 'configs/digits_cpu.yaml'}
output_dir: {folder}
overrides: [trainer.max_epochs=3, trainer.progress_bar=false, data.val_per_class=5, data.train_per_class=80,
            data.batch_size=50, trainer.knn_monitor_every=1]
protocols: [knn]
arms:
  named:
    plain: augment_policies/digits.yaml
""")
        return path

    assert inproc("ablate", spec(tmp_path / "a")) == 0
    path = spec(tmp_path / "b")
    arm = tmp_path / "b" / "t" / "runs" / "plain-seed0"
    proc = start("ablate", path)
    wait_for(arm / "checkpoints" / "last.ckpt", proc)
    proc.kill()
    finish(proc, 60)
    assert state(arm / "checkpoints" / "last.ckpt")["epoch"] < 2
    capsys.readouterr()
    assert inproc("ablate", path) == 0
    assert "resuming interrupted run" in capsys.readouterr().out
    assert sorted(p.name for p in arm.parent.iterdir()) == ["plain-seed0"]  # resumed, not restarted aside
    assert_same_weights(tmp_path / "a" / "t" / "runs" / "plain-seed0" / "checkpoints" / "last.ckpt",
                        arm / "checkpoints" / "last.ckpt")
    ra, rb = (json.loads(next((root / "t" / "runs" / "plain-seed0" / "eval").rglob("results.json")).read_text())
              for root in (tmp_path / "a", tmp_path / "b"))
    assert ra["metrics"]["simclr"] == rb["metrics"]["simclr"]
