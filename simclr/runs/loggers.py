"""Lightning loggers chosen in the run config (`trainer.loggers`, `trainer.logger_args`).

CSV and TensorBoard by default; any Lightning logger by short name or class path. Checked before a run
directory exists, so a misspelt logger or argument never leaves a stub run behind.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from pathlib import Path

from pytorch_lightning.loggers import Logger

from simclr.config.run import LOGGERS, RunConfig
from simclr.config.schema import ConfigError
from simclr.utils import first_free


def _next_part(folder: Path) -> str:
    """Each training segment (start, then every resume) logs to its own csv/part-N: Lightning's
    CSVLogger deletes an existing metrics.csv, and no result may be lost."""
    return first_free(lambda n: folder / f"part-{n}").name


OPTIONAL_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "comet": "comet_ml", "neptune": "neptune"}


def _logger_class(name: str, index: int) -> type[Logger]:
    path = f"pytorch_lightning.loggers.{LOGGERS[name]}" if name in LOGGERS else name
    where = f"trainer.loggers[{index}]"
    package = OPTIONAL_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"{where}: '{name}' needs the {package} package; pip install {package}"
                          f"{'-skinny' if name == 'mlflow' else ''}.")
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot import logger class '{path}': {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"{where}: '{path}' is not a Lightning Logger class.")
    return cls


def check_loggers(cfg: RunConfig) -> None:
    """Unknown logger classes, missing packages and misspelt arguments fail before a run directory exists."""
    for i, name in enumerate(cfg.trainer.loggers):
        params = inspect.signature(_logger_class(name, i).__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for key in cfg.trainer.logger_args.get(name, {}):
            if key not in params or key == "self":
                valid = ", ".join(p for p in params if p != "self")
                raise ConfigError(f"trainer.logger_args.{name}.{key}: not an argument of {name}; valid: {valid}.")


def mlflow_store(cfg: RunConfig) -> dict:
    """Where MLflow logs when the run config and MLFLOW_TRACKING_URI name no store: an SQLite database
    `<output_dir>/mlflow.db`, artifacts in `<output_dir>/mlartifacts`. (MLflow 3 refuses its old file store,
    ./mlruns, unless MLFLOW_ALLOW_FILE_STORE=true.) A store the user names is left to MLflow's own defaults."""
    if "tracking_uri" in cfg.trainer.logger_args.get("mlflow", {}):
        return {}
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return dict(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    out = Path(cfg.output_dir).resolve()
    return dict(tracking_uri=f"sqlite:///{out / 'mlflow.db'}", artifact_location=(out / "mlartifacts").as_uri())


def build_loggers(cfg: RunConfig, run_dir: Path) -> list[Logger]:
    defaults = {
        "csv": dict(save_dir=run_dir, name="csv", version=_next_part(run_dir / "csv")),
        "tensorboard": dict(save_dir=run_dir, name="tb", version=""),
        "mlflow": dict(experiment_name=cfg.name, run_name=run_dir.name, **mlflow_store(cfg)),
        "wandb": dict(save_dir=run_dir, name=run_dir.name),
    }
    return [_logger_class(name, i)(**{**defaults.get(name, {}), **cfg.trainer.logger_args.get(name, {})})
            for i, name in enumerate(cfg.trainer.loggers)]
