"""The layout of a run directory: every name in it is spelled here, once.

    <run_dir>/
        config.yaml              the resolved config, frozen (`config_path`)
        policy.yaml              the augmentation policy as resolved when the run started (`policy_path`)
        run.json                 the record: status, versions, timings, the processes training it (`record_path`)
        checkpoints/last.ckpt    after every epoch, and every trainer.checkpoint_every_n_steps (`last_checkpoint`)
        checkpoints/best.ckpt    the best epoch by the monitored metric (`best_checkpoint`)
        eval/eval-N/             one folder per evaluation (`eval_dir`)
        features/                the evaluation's cached features (`features_dir`)

and what the loggers write (simclr.runs.loggers: csv/part-N, tb/).
"""
from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
POLICY = "policy.yaml"
RECORD = "run.json"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
EVAL = "eval"
FEATURES = "features"


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def policy_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / POLICY


def record_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RECORD


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: str | Path) -> Path:
    return checkpoint_dir(run_dir) / LAST


def best_checkpoint(run_dir: str | Path) -> Path:
    return checkpoint_dir(run_dir) / BEST


def eval_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVAL


def features_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FEATURES


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint file lies in (`<run_dir>/checkpoints/x.ckpt`), None for one outside a run."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else None
