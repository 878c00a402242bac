"""`run(cfg)`: the one function that pretrains. The CLI and the ablation runner both call it.

A run directory holds: config.yaml (resolved, frozen), policy.yaml (resolved), run.json (status,
versions, timings), checkpoints/{last,best}.ckpt, csv/part-N/metrics.csv (one per training segment)
and tb/ (TensorBoard). An existing
directory is never overwritten: a new run gets the next free name (`name-2`, ...).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

import simclr
from simclr.augment import load_policy
from simclr.config.run import RunConfig, load_config, save_config
from simclr.config.schema import ConfigError, to_dict
from simclr.data import SimCLRDataModule
from simclr.evaluate.monitor import KNNMonitor
from simclr.module import SimCLRModule
from simclr.utils import first_free, git_commit, tune_cpu_allocator

log = logging.getLogger("simclr")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]


def new_run_dir(cfg: RunConfig) -> Path:
    base = Path(cfg.output_dir) / cfg.name
    path = first_free(lambda n: base if n == 1 else base.with_name(f"{base.name}-{n}"))
    path.mkdir(parents=True)
    return path


def _write_status(run_dir: Path, **fields) -> None:
    status_file = run_dir / "run.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    status.update(fields)
    status_file.write_text(json.dumps(status, indent=2))


def _next_part(folder: Path) -> str:
    """Each training segment (start, then every resume) logs to its own csv/part-N: Lightning's
    CSVLogger deletes an existing metrics.csv, and no result may be lost."""
    return first_free(lambda n: folder / f"part-{n}").name


def _accelerator(cfg: RunConfig) -> str:
    if cfg.trainer.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return cfg.trainer.accelerator


def check_device_options(cfg: RunConfig) -> None:
    """Options the hardware cannot honour are errors before a run directory exists, not deep tracebacks."""
    t, acc = cfg.trainer, _accelerator(cfg)
    if acc == "cpu" and t.precision == "16-mixed":
        raise ConfigError("trainer.precision: 16-mixed (fp16 autocast) needs a GPU; on CPU use bf16-mixed or 32.")
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator: '{t.accelerator}' but no CUDA device is visible; use cpu or auto.")
    if acc in ("gpu", "cuda") and t.devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices: {t.devices} requested, {torch.cuda.device_count()} CUDA devices visible.")


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    t = cfg.trainer
    knn = bool(t.knn_monitor_every and cfg.data.val_per_class)
    monitor, mode, every = ("monitor/knn_top1", "max", t.knn_monitor_every) if knn else ("train/loss_epoch", "min", 1)
    ckpt_dir = run_dir / "checkpoints"
    # no version counter: last.ckpt may already exist (a resumed run, a mid-run save) and must be replaced,
    # not joined by a last-v1.ckpt that --resume would never read
    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           every_n_epochs=every, save_on_train_epoch_end=True, enable_version_counter=False)
    cbs = [*callbacks, last, best]
    if t.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    accelerator = _accelerator(cfg)
    return pl.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, sync_batchnorm=t.sync_batchnorm,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress_bar,
        limit_train_batches=t.limit_train_batches, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, callbacks=cbs, deterministic=accelerator == "cpu",
        logger=[CSVLogger(run_dir, name="csv", version=_next_part(run_dir / "csv")),
                TensorBoardLogger(run_dir, name="tb", version="")],
        enable_model_summary=t.progress_bar,
    )


def run(cfg: RunConfig | None = None, resume: str | Path | None = None, callbacks: Sequence[pl.Callback] = (),
        splits=None) -> RunResult:
    """Pretrain per `cfg`, or continue the run in directory `resume` from its last checkpoint."""
    tune_cpu_allocator()
    if resume is not None:
        run_dir = Path(resume)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
        if not ckpt.is_file():
            raise ConfigError(f"--resume {run_dir}: no checkpoints/last.ckpt (the run stopped before its first epoch "
                              "ended); start it afresh.")
        cfg = load_config(run_dir / "config.yaml")
    elif cfg is None:
        raise ValueError("run() needs a config or a run directory to resume")
    check_device_options(cfg)  # new runs and resumed ones alike: a run may move to another machine
    if resume is None:
        resolved = load_policy(cfg.policy)  # fail on a bad policy before creating anything
        run_dir, ckpt = new_run_dir(cfg), None
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "policy.yaml").write_text(resolved.to_yaml())
        _write_status(run_dir, package_version=simclr.__version__, git_commit=git_commit(), torch=torch.__version__)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = SimCLRDataModule(cfg.data, seed=cfg.seed, splits=splits)
    dm.setup()
    # the policy as resolved when the run started (a resumed run ignores later edits to the file)
    policy = yaml.safe_load((run_dir / "policy.yaml").read_text())
    module = SimCLRModule(to_dict(cfg), dm.channels, dm.num_classes, policy,
                          image_size=int(dm.splits["train"].images.shape[-1]))  # fit() restores ckpt state
    monitor = KNNMonitor(dm.splits["train"], dm.splits["val"], cfg.trainer.knn_monitor_every, cfg.eval.monitor_k,
                         cfg.eval.knn_temperature)
    trainer = build_trainer(cfg, run_dir, [monitor, *callbacks])
    _write_status(run_dir, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    log.info("run directory: %s", run_dir)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    except BaseException:
        _write_status(run_dir, status="interrupted", epoch=trainer.current_epoch)
        raise
    done = trainer.current_epoch >= cfg.trainer.max_epochs
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _write_status(run_dir, status="finished" if done else "stopped", epoch=trainer.current_epoch,
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"), metrics=metrics)
    best = run_dir / "checkpoints" / "best.ckpt"
    return RunResult(run_dir, run_dir / "checkpoints" / "last.ckpt", best if best.exists() else None, metrics)
