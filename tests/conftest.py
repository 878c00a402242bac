import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SIMCLR_CACHE", "/tmp/simclr-test-cache")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (end to end, over ~8 s each); CI and the README's test command do")


def pytest_collection_modifyitems(config, items):
    """`python -m pytest` is the quick loop: the slow end-to-end tests are deselected unless --slow, an explicit -m,
    -k or test id asks for them, and pytest says how many it left out."""
    named = any("::" in arg for arg in config.args)
    if config.getoption("--slow") or config.getoption("markexpr") or config.getoption("keyword") or named:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]

TINY = [
    "name=tiny", "seed=0", "policy=digits",
    "data.name=digits", "data.image_size=16", "data.train_per_class=20", "data.val_per_class=5",
    "data.test_per_class=10", "data.batch_size=50",
    "model.backbone=small_cnn", "model.width=8", "model.head_hidden_dim=32", "model.head_out_dim=16",
    "optim.name=sgd", "optim.lr=0.5", "optim.warmup_epochs=0",
    "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.knn_monitor_every=1",
    "eval.knn_k=[20,5]",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"output_dir={tmp_path / 'runs'}"]


# the overrides of one arm in the tiny ablation and launcher specs (the spec's runner sets name, seed and policy)
TINY_ARM = ["trainer.progress_bar=false", "trainer.knn_monitor_every=0", "data.val_per_class=5",
            "data.test_per_class=10", "model.width=8", "model.head_hidden_dim=32", "model.head_out_dim=16",
            "optim.name=sgd", "optim.lr=0.5", "optim.warmup_epochs=0"]


@pytest.fixture(scope="session")
def _trained_once(tmp_path_factory):
    """The one trained run of the suite: TINY for one epoch, trained once per session and never touched."""
    from simclr.cli import main
    out = tmp_path_factory.mktemp("trained")
    assert main(["pretrain", *TINY, f"output_dir={out}", "trainer.max_epochs=1"]) == 0
    return out / "tiny"


@pytest.fixture(scope="module")
def trained_run(_trained_once, tmp_path_factory):
    """A finished tiny run of this module's own (a copy: tests may evaluate, edit or resume it)."""
    return Path(shutil.copytree(_trained_once, tmp_path_factory.mktemp("run") / "tiny"))


@pytest.fixture
def slurm(monkeypatch):
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        reason = ("SLURM binaries absent (sbatch, slurmctld); as root, scripts/slurm_local_cluster.sh installs "
                  "slurm-wlm + munge and starts a one-node cluster")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        if os.geteuid() != 0:
            pytest.fail("SLURM is installed but no controller answers; start it with scripts/slurm_local_cluster.sh")
        subprocess.run([str(REPO / "scripts/slurm_local_cluster.sh")], check=True, capture_output=True)
    # jobs run on this machine with this Python; they must import this tree's simclr
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
