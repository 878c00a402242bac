"""What a user of the installed package gets: shipped configs by name, declared dependencies, simclr's own
commit (not that of the folder it lies in), the unified lightning package. The wheel itself: test_install.py."""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from simclr.config.run import load_config
from simclr.config.schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {_norm(r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip())
            for r in reqs}


def _imported() -> dict[str, str]:
    """top-level name -> a file importing it, for every import under simclr/ that is not stdlib or simclr."""
    found = {}
    for path in sorted((ROOT / "simclr").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "simclr":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    dists, declared = packages_distributions(), _declared()
    imported = _imported()
    assert {"torch", "scipy", "pytorch_lightning"} <= set(imported)  # the scan sees the package's imports
    missing = [f"{top} ({', '.join(dists.get(top, ['?']))}, imported in {where})" for top, where in imported.items()
               if not {_norm(d) for d in dists.get(top, [top])} & declared]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_license_and_urls_in_the_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert {"Homepage", "Repository"} <= set(project["urls"])


def test_shipped_configs_resolve_by_bare_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("digits_cpu").name == load_config("digits_cpu.yaml").name == "digits_cpu"
    (tmp_path / "digits_cpu.yaml").write_text("name: mine\ndata: {name: digits}\n")  # a file of the user's wins over a shipped name
    assert load_config("digits_cpu.yaml").name == "mine"
    with pytest.raises(ConfigError) as err:
        load_config("digits_cp")
    assert "digits_cp: config file not found" in str(err.value) and "cifar10_cpu, " in str(err.value)
    with pytest.raises(ConfigError, match="config file not found"):  # a path is never swapped for a shipped file
        load_config("elsewhere/digits_cpu.yaml")


def test_configs_at_the_root_are_the_shipped_ones():
    assert (ROOT / "configs").resolve() == (ROOT / "simclr" / "configs").resolve()


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_is_simclrs_not_that_of_the_folder_it_lies_in(tmp_path):
    """A copy of simclr inside the user's repository (a venv there) has no commit of its own; the checkout's
    own package has its HEAD."""
    user = tmp_path / "project"
    site = user / ".venv" / "site-packages"
    shutil.copytree(ROOT / "simclr", site / "simclr", ignore=shutil.ignore_patterns("__pycache__"))
    _git(user, "init", "-q")
    (user / "x.txt").write_text("x")
    _git(user, "add", "x.txt")
    _git(user, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "x")
    probe = "import simclr.utils as u; print(u.__file__, u.git_commit())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=user, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(site)}).stdout.split()
    assert out == [str(site / "simclr" / "utils" / "__init__.py"), "None"]
    from simclr.utils import git_commit
    if (ROOT / ".git").exists():
        assert git_commit() == _git(ROOT, "rev-parse", "HEAD")


def test_the_unified_lightning_package_missing_or_misnamed_is_one_line(monkeypatch):
    import importlib.util

    from simclr.module import unified
    unified.classes.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lightning" else real(name, *a))
    try:
        with pytest.raises(ConfigError, match="'lightning' is not installed; pip install lightning"):
            unified.classes("lightning")
        with pytest.raises(ConfigError, match="valid: pytorch_lightning, lightning"):
            unified.classes("lightning.pytorch")
    finally:
        unified.classes.cache_clear()
    assert unified.classes() == (unified.SimCLRModule, unified.SimCLRDataModule)


def test_simclrs_classes_rebuilt_on_the_unified_package_look_like_its_own():
    """What lightning.Trainer checks: its own LightningModule, and which hooks the model overrides (only
    simclr's; pytorch_lightning's copies of the defaults would count as overrides). The fit itself runs in
    docs/python.md (tests/test_docs.py)."""
    if importlib.util.find_spec("lightning") is None and not os.environ.get("CI"):
        pytest.skip("the `lightning` package is not installed (a test extra: pip install lightning)")
    import lightning.pytorch as lp
    from lightning.pytorch.utilities.model_helpers import is_overridden

    from simclr.module import unified
    module_cls, data_cls = unified.classes("lightning")
    assert issubclass(module_cls, lp.LightningModule) and issubclass(data_cls, lp.LightningDataModule)
    assert issubclass(module_cls, unified.SimCLRModule)
    assert is_overridden("training_step", module_cls, lp.LightningModule)
    assert is_overridden("on_after_batch_transfer", module_cls, lp.LightningModule)
    assert not is_overridden("configure_sharded_model", module_cls, lp.LightningModule)
    assert not is_overridden("on_before_batch_transfer", data_cls, lp.LightningDataModule)


def test_build_gives_simclrs_own_classes_for_pytorch_lightning(tiny_overrides):
    import pytorch_lightning as pl

    from simclr.module import SimCLRModule
    from simclr.module.unified import build
    module, data = build(load_config(None, tiny_overrides))
    assert type(module) is SimCLRModule and isinstance(data, pl.LightningDataModule)
    assert module.cfg.data.name == "digits" and module.hparams["policy"]["name"] == "digits"
    assert len(data.splits["train"]) > 0
