"""`run(cfg)`: the one function that pretrains. The CLI and the ablation runner both call it.

What a run directory holds and how it is found again lives in simclr.runs (layout: the names in it; directory:
run.json; checkpoints, resume: its checkpoint files and the checks a resume makes; ranks: one directory for
every process of a multi-process run). Loggers (simclr.runs.loggers) write into it (`trainer.loggers`; by
default csv/part-N/metrics.csv, one per training segment, and tb/ for TensorBoard; mlflow logs to the
SQLite store `<output_dir>/mlflow.db` unless `trainer.logger_args.mlflow.tracking_uri` or MLFLOW_TRACKING_URI say otherwise).
"""
from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

import simclr
from simclr.augment import load_policy
from simclr.augment.policy import input_size
from simclr.config.run import RunConfig, load_config, save_config
from simclr.config.schema import ConfigError, to_dict
from simclr.data import SimCLRDataModule, class_warnings, flat_tree, test_split_record
from simclr.evaluate.monitor import KNNMonitor
from simclr.models import check_fits
from simclr.module import EpochRate, SimCLRModule, Throughput, cpu_state, load_avg
from simclr.module.devices import accelerator, check_device_options, resolve_precision
from simclr.runs.checkpoints import LastEveryEpoch, checkpoint_callbacks
from simclr.runs.directory import (check_not_running, finished_metrics, new_run_dir, own_run, read_record,
                                   scheduler_job, write_status)
from simclr.runs.layout import best_checkpoint, config_path, last_checkpoint, policy_path
from simclr.runs.loggers import build_loggers, check_loggers
from simclr.runs.ranks import RankRecord, announce, join, launcher_rank, withdraw
from simclr.runs.resume import flatten, resumable
from simclr.utils import error_summary, git_commit, this_process, tune_cpu_allocator

log = logging.getLogger("simclr")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]


class RunInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM after a graceful shutdown; checkpoints/last.ckpt holds the last
    completed epoch (none is written on the way out)."""

    def __init__(self, run_dir: Path, epoch: int, signal_name: str):
        super().__init__(f"{signal_name} after {epoch} completed epoch(s); resume with: "
                         f"simclr pretrain --resume {run_dir}")
        self.run_dir, self.epoch, self.signal_name = run_dir, epoch, signal_name


def check_policy_fits(policy, channels: int) -> None:
    """A policy whose normalize has 3 values cannot run on 1-channel images: refuse before anything is created."""
    for i, view in enumerate(policy.views):
        for op in view:
            if op.name == "normalize":
                for key in ("mean", "std"):
                    n = len(getattr(op.params, key))
                    if n not in (1, channels):
                        raise ConfigError(f"{policy.source}: views[{i}] normalize.{key} has {n} values but the "
                                          f"images have {channels} channel(s); give 1 or {channels} values "
                                          "(or choose a policy made for this data).")


def _check_test_split_recorded(run_dir: Path, cfg: RunConfig) -> None:
    """A run on a flat tree that began before such trees had a held-out test split (its run.json records no
    test_split) trained on every image: resumed now, it would train on fewer images from here on, and its test
    images would still be images it trained on. Refused; a new run holds them out from its first step."""
    if not flat_tree(cfg.data):
        return
    if "test_split" not in (read_record(run_dir) or {}):
        raise ConfigError(f"--resume {run_dir}: the run trained on every image of the flat tree {cfg.data.path} "
                          "(it began before flat trees had a held-out test split: run.json records no test_split), "
                          "so no image of it can be a clean test image; start a new run, which holds "
                          f"data.holdout_fraction={cfg.data.holdout_fraction} of each class out from its first step.")


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    t = cfg.trainer
    knn = bool(t.knn_monitor_every and cfg.data.val_per_class)
    monitor, mode, every = ("monitor/knn_top1", "max", t.knn_monitor_every) if knn else ("train/loss_epoch", "min", 1)
    checkpoints = checkpoint_callbacks(run_dir, monitor, mode, every, t.checkpoint_every_n_steps)  # best, then last
    cbs = [*callbacks, *checkpoints, LearningRateMonitor(logging_interval="step"), Throughput()]
    if t.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    device = accelerator(cfg)
    return pl.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=device, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, sync_batchnorm=t.sync_batchnorm,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress_bar,
        limit_train_batches=t.limit_train_batches, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, callbacks=cbs, deterministic=device == "cpu",
        logger=build_loggers(cfg, run_dir),
        enable_model_summary=t.progress_bar,
    )


def _auto_target(cfg: RunConfig) -> tuple[Path | None, bool]:
    """`--resume auto`: (the run this job continues, whether it has a checkpoint to continue from), or
    (None, False) for a fresh run. A run found with other settings is refused, never continued."""
    found = own_run(cfg.output_dir, cfg.name)
    if found is None:
        return None, False
    if not config_path(found).is_file():
        raise ConfigError(f"--resume auto: {found} exists but is not a run directory (no config.yaml); choose "
                          "another name= or move it aside.")
    stored, (wanted, _) = load_config(config_path(found), stored=True), resolve_precision(cfg)
    then, now = flatten(to_dict(stored)), flatten(to_dict(wanted))
    changed = [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(then) | set(now))
               if then.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"--resume auto: {found} holds a run started with other settings ({'; '.join(changed[:4])}); "
                          "give another name=, or continue that run as it was with --resume "
                          f"{found}.")
    return found, last_checkpoint(found).is_file()


def _watch_sigint() -> tuple[list, object]:
    """Record that a Ctrl-C arrived: under DDP a peer that stopped first can make this rank's next collective
    fail with a RuntimeError, which is still the user's interrupt, not a failed run."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler or threading.current_thread() is not threading.main_thread():
        return seen, None

    def note(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, note)
    return seen, previous


@dataclass(frozen=True)
class _Start:
    """Where a call to run() starts: `run_dir` None for a new run (or the directory rank 0 chose, `into`, that
    this rank joins fresh), else the run to continue from `ckpt` with its recorded config."""
    cfg: RunConfig
    run_dir: Path | None = None
    ckpt: Path | None = None
    recorded: dict | None = None
    into: Path | None = None

    @property
    def fresh(self) -> bool:
        return self.run_dir is None


def _where_to_start(cfg: RunConfig | None, resume: str | Path | None, rank: int) -> _Start:
    if cfg is None and resume in (None, "auto"):
        raise ValueError("run() needs a config, or a run directory to resume")
    into = None
    if rank > 0 and resume in (None, "auto"):
        into, resumed = join(Path(cfg.output_dir))
        resume = into if resumed else None
    elif resume == "auto":
        into, resumed = _auto_target(cfg)
        resume = into if resumed else None
    if resume is None:
        return _Start(cfg, into=into)
    run_dir = Path(resume)
    cfg, ckpt, recorded = resumable(run_dir)
    if rank == 0:
        check_not_running(run_dir)
    return _Start(cfg, run_dir, ckpt, recorded, into)


def _checked_data(cfg: RunConfig, policy, start: _Start, splits) -> SimCLRDataModule:
    """The data, set up and checked against the policy and the model, before a run directory exists."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = SimCLRDataModule(cfg.data, seed=cfg.seed, splits=splits)
    dm.setup()  # bad data fails here
    check_policy_fits(policy, dm.channels)
    check_fits(cfg.model, dm.channels, input_size(policy, int(dm.splits["train"].images.shape[-1])))
    if not start.fresh:
        _check_test_split_recorded(start.run_dir, cfg)
    return dm


@dataclass
class _Parts:
    run_dir: Path
    module: SimCLRModule
    trainer: pl.Trainer
    rate: EpochRate


def _set_up(cfg: RunConfig, start: _Start, dm: SimCLRDataModule, policy, precision: dict, writes: bool,
            callbacks: Sequence[pl.Callback]) -> _Parts:
    """The run directory (a new one written with its config, policy and record; rank 0 only), the module and
    the Trainer. A new run that fails here leaves no stub (it would push the next one to name-2)."""
    run_dir = start.run_dir or start.into or new_run_dir(cfg.output_dir, cfg.name)
    try:
        if start.fresh and writes:
            save_config(cfg, config_path(run_dir))
            policy_path(run_dir).write_text(policy.to_yaml())
            write_status(run_dir, package_version=simclr.__version__, git_commit=git_commit(),
                         torch=torch.__version__, warnings=class_warnings(dm.splits), precision=precision,
                         slurm_job=scheduler_job(), test_split=test_split_record(cfg.data, dm.splits["test"]))
        elif writes and "precision" not in (read_record(run_dir) or {}):
            write_status(run_dir, precision=precision)  # a run recorded before `auto`: what it resumes with
        stored_policy = yaml.safe_load(policy_path(run_dir).read_text())
        module = SimCLRModule(to_dict(cfg) if start.fresh else start.recorded, dm.channels, dm.num_classes,
                              stored_policy, image_size=int(dm.splits["train"].images.shape[-1]))  # fit() restores ckpt state
        monitor = KNNMonitor(dm.splits["train"], dm.splits["val"], cfg.trainer.knn_monitor_every,
                             cfg.eval.monitor_k, cfg.eval.knn_temperature)
        rate = EpochRate()
        trainer = build_trainer(cfg, run_dir, [monitor, rate, RankRecord(run_dir), *callbacks])
    except BaseException:
        if start.fresh and writes and start.into is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return _Parts(run_dir, module, trainer, rate)


def _fit(cfg: RunConfig, start: _Start, dm: SimCLRDataModule, parts: _Parts, writes: bool) -> RunResult:
    """Train, keeping run.json's status true whatever ends the fit: finished or stopped, interrupted (Ctrl-C,
    SIGTERM, a peer rank's Ctrl-C) or failed (with its error line, so --resume can continue once fixed)."""
    run_dir, trainer, rate = parts.run_dir, parts.trainer, parts.rate
    cpu = {**cpu_state(), "load_avg_start": load_avg()}  # this training segment's (a resume records its own)
    status = write_status if writes else (lambda run_dir, **fields: None)  # the other ranks read what rank 0 wrote
    status(run_dir, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"), process=this_process(),
           processes=[this_process()], cpu=cpu, throughput=rate.summary())

    def measured() -> dict:
        return {"cpu": {**cpu, "load_avg_end": load_avg()}, "throughput": rate.summary()}
    if writes:
        log.info("run directory: %s", run_dir)
    rendezvous = announce(run_dir, Path(cfg.output_dir), resumed=not start.fresh) if writes else None
    seen, previous = _watch_sigint()
    try:
        trainer.fit(parts.module, datamodule=dm, ckpt_path=start.ckpt)
    except (SystemExit, SIGTERMException) as e:  # Lightning ends a Ctrl-C with sys.exit(1) after shutting down
        epochs = LastEveryEpoch.completed_epochs(trainer)
        status(run_dir, status="interrupted", epoch=epochs, **measured())
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning leaves Ctrl-C ignored
        if isinstance(e, SIGTERMException) or trainer.interrupted or seen:
            raise RunInterrupted(run_dir, epochs,
                                 "SIGTERM" if isinstance(e, SIGTERMException) else "SIGINT") from None
        raise
    except Exception as e:  # a damaged file, a bug: failed, not interrupted; --resume continues it once fixed
        epochs = LastEveryEpoch.completed_epochs(trainer)
        if seen:  # a peer rank stopped by the same Ctrl-C broke this rank's collective
            status(run_dir, status="interrupted", epoch=epochs, **measured())
            raise RunInterrupted(run_dir, epochs, "SIGINT") from None
        status(run_dir, status="failed", epoch=epochs, error=error_summary(e), **measured())
        raise
    except BaseException:
        status(run_dir, status="interrupted", epoch=LastEveryEpoch.completed_epochs(trainer), **measured())
        raise
    finally:
        if previous is not None and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)
        withdraw(rendezvous)
    done = trainer.current_epoch >= cfg.trainer.max_epochs
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    status(run_dir, status="finished" if done else "stopped", epoch=trainer.current_epoch,
           finished=time.strftime("%Y-%m-%dT%H:%M:%S"), metrics=metrics, **measured())
    best = best_checkpoint(run_dir)
    return RunResult(run_dir, last_checkpoint(run_dir), best if best.exists() else None, metrics)


def run(cfg: RunConfig | None = None, resume: str | Path | None = None, callbacks: Sequence[pl.Callback] = (),
        splits=None) -> RunResult:
    """Pretrain per `cfg`, or continue the run in directory `resume` from its last checkpoint; `resume="auto"`
    (with `cfg`) continues the run this job started if there is one. Under a launcher that starts one process
    per device every rank calls this: rank 0 owns the directory, the others join it (simclr.runs.ranks).
    Everything a run needs is checked before its directory is created."""
    tune_cpu_allocator()
    rank = launcher_rank()
    start = _where_to_start(cfg, resume, rank)
    check_device_options(start.cfg)  # new runs and resumed ones alike: a run may move to another machine
    if not start.fresh:
        done = finished_metrics(start.run_dir, start.cfg.trainer.max_epochs)
        if done is not None:  # resuming would retrain nothing and reset the record's metrics and times
            best = best_checkpoint(start.run_dir)
            return RunResult(start.run_dir, start.ckpt, best if best.exists() else None, done)
    # config.yaml and the checkpoints hold the resolved values, so a resume on another machine runs at the
    # precision the run started with
    cfg, precision = resolve_precision(start.cfg)
    check_loggers(cfg)
    # the policy as resolved when the run started (a resumed run ignores later edits to the file)
    policy = load_policy(cfg.policy if start.fresh else policy_path(start.run_dir))
    dm = _checked_data(cfg, policy, start, splits)
    parts = _set_up(cfg, start, dm, policy, precision, rank == 0, callbacks)
    return _fit(cfg, start, dm, parts, rank == 0)
