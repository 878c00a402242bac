"""A normal (non-editable) install works: the wheel carries the shipped policies, configs, LICENSE and py.typed,
and its console script lists policies and pretrains a shipped config by name from a directory that holds no
source tree, recording simclr's version and no commit (a wheel has none).

Offline and fast: the wheel is built without build isolation, and the fresh venv sees the system's
torch & co. (--system-site-packages) but gets simclr only from the wheel.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT")}
    wheels = tmp / "wheels"
    # build from a copy of the tree this test lives in (setuptools leaves build/ and *.egg-info behind)
    src = tmp / "src"
    shutil.copytree(REPO / "simclr", src / "simclr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(src)], tmp, env)
    wheel, = wheels.glob("simclr_augment-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp, env)
    return wheel, venv, tmp / "work", env


pytestmark = pytest.mark.slow  # a wheel build and a fresh venv: about a minute here


def test_wheel_ships_policies_configs_license_and_py_typed(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "simclr/py.typed" in names
    assert "simclr/policies/simclr_cifar.yaml" in names and "simclr/policies/digits.yaml" in names
    assert {"simclr/configs/digits_cpu.yaml", "simclr/configs/ablations/tiny_digits.yaml",
            "simclr/configs/searches/digits_rotation.yaml",
            "simclr/configs/ablations/cifar_colour_crop_sweep/s0_crop0.3.yaml"} <= set(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_installed_wheel_pretrains_a_shipped_config_by_name_from_an_empty_folder(installed):
    """The issue's check: `simclr pretrain --config digits_cpu trainer.max_epochs=1` where there is no configs/."""
    wheel, venv, work, env = installed
    empty = work.parent / "empty"
    empty.mkdir()
    simclr_cli = str(venv / "bin" / "simclr")
    bad = subprocess.run([simclr_cli, "pretrain", "--config", "digit_cpu"], cwd=empty, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "shipped configs: " in bad.stderr and "digits_cpu" in bad.stderr
    _run([simclr_cli, "pretrain", "--config", "digits_cpu", "trainer.max_epochs=1", "trainer.progress_bar=false"],
         empty, env)
    record = json.loads((empty / "runs" / "digits_cpu" / "run.json").read_text())
    assert record["status"] == "finished" and record["package_version"] == wheel.name.split("-")[1]
    assert record["git_commit"] is None  # a wheel has no commit; not that of the folder it runs in


def test_installed_wheel_lists_policies_and_pretrains(installed):
    _, venv, work, env = installed
    work.mkdir()
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import simclr; print(simclr.__file__)"], work, env).strip()
    assert where.startswith(str(venv)), f"the venv imports simclr from {where}, not from the wheel"
    listed = _run([str(venv / "bin" / "simclr"), "policy", "list"], work, env)
    assert "simclr_cifar" in listed and "digits" in listed
    _run([str(venv / "bin" / "simclr"), "pretrain", "name=wheel", "policy=digits", "data.name=digits",
          "data.image_size=16", "data.train_per_class=10", "data.val_per_class=2", "data.batch_size=50",
          "model.backbone=small_cnn", "model.width=8", "model.head_hidden_dim=16", "model.head_out_dim=8",
          "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.progress_bar=false", "output_dir=runs"],
         work, env)
    assert (work / "runs" / "wheel" / "checkpoints" / "last.ckpt").is_file()
