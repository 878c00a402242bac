"""`run(cfg)`: the one function that pretrains. The CLI and the ablation runner both call it.

A run directory holds: config.yaml (resolved, frozen), policy.yaml (resolved), run.json (status,
versions, timings, the CPU's threads and load, train images/s), checkpoints/{last,best}.ckpt and what the
loggers write (`trainer.loggers`; by default csv/part-N/metrics.csv, one per training segment, and tb/ for
TensorBoard; mlflow logs to `<output_dir>/mlruns` unless `trainer.logger_args.mlflow.tracking_uri` or
MLFLOW_TRACKING_URI say otherwise). An existing directory is never overwritten: a new run gets the next free name (`name-2`, ...).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
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
from simclr.config.files import inside, writable_dir
from simclr.config.run import RunConfig, save_config
from simclr.config.schema import ConfigError, to_dict
from simclr.data import SimCLRDataModule, class_warnings
from simclr.evaluate.monitor import KNNMonitor
from simclr.models import check_fits
from simclr.module import EpochRate, SimCLRModule, Throughput, cpu_state, load_avg
from simclr.module.checkpoints import AtomicCheckpoint, LastEveryEpoch, resumable
from simclr.module.loggers import build_loggers, check_loggers
from simclr.utils import cpu_has_bf16, error_summary, first_free, git_commit, process_running, this_process, \
    tune_cpu_allocator, write_json_atomic

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


def new_run_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.output_dir)
    writable_dir(out, "output_dir")
    base = inside(out / cfg.name, out, "name")
    start = 1
    while True:  # two runs starting at the same moment each get their own directory
        path = first_free(lambda n: base if n == 1 else base.with_name(f"{base.name}-{n}"), start)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            start += 1
        except OSError as e:
            raise ConfigError(f"output_dir: cannot create {path} ({e.strerror}).") from None


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


def _check_not_running(run_dir: Path) -> None:
    """Refuse to resume a run another live process is training: both would write its checkpoints."""
    status_file = run_dir / "run.json"
    if not (status_file.exists() or status_file.is_symlink()):  # a dangling or looping link is damage too
        return
    try:
        record = json.loads(status_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # a directory, bytes, broken or deep JSON
        record = None
    if not isinstance(record, dict):  # the resume would fail writing its status into it, after loading everything
        raise ConfigError(f"--resume {run_dir}: {status_file} is not the JSON object simclr writes there (damaged or "
                          "edited); restore it, or move it aside and the resume writes a new one.")
    who = record.get("process") if record.get("status") == "running" else None
    if process_running(who) and who["pid"] != os.getpid():  # this process: a run it left (a retried trial)
        raise ConfigError(f"--resume {run_dir}: process {who['pid']} on {who['host']} is training this run now "
                          f"({status_file}); a second one would write the same checkpoints. Let it finish, or "
                          "stop it (Ctrl-C) and resume then.")


def _finished(run_dir: Path, cfg: RunConfig) -> RunResult | None:
    """The result of a run that already finished all its epochs (from its run.json, which _check_not_running
    has read as a JSON object), said in one line; None for a run with epochs left."""
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    if record.get("status") != "finished" or record.get("epoch", -1) < cfg.trainer.max_epochs:
        return None
    log.warning("%s: finished all %d epochs already (run.json); nothing to resume, nothing changed", run_dir,
                cfg.trainer.max_epochs)
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    best = run_dir / "checkpoints" / "best.ckpt"
    return RunResult(run_dir, run_dir / "checkpoints" / "last.ckpt", best if best.exists() else None,
                     {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})


def _write_status(run_dir: Path, **fields) -> None:
    status_file = run_dir / "run.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    status.update(fields)
    if status.get("status") != "failed":
        status.pop("error", None)  # a failed run resumed: the old error no longer describes it
    write_json_atomic(status_file, status)  # a kill -9 mid-write must not leave a run.json resume cannot read


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
    if cfg.data.decode_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("data.decode_device: 'cuda' but no CUDA device is visible; use data.decode_device=cpu "
                          "(decoding in the DataLoader workers).")
    if cfg.data.decode_device == "cuda" and acc not in ("gpu", "cuda"):
        raise ConfigError(f"data.decode_device: 'cuda' decodes on the model's GPU, but trainer.accelerator is "
                          f"'{t.accelerator}'; use data.decode_device=cpu or trainer.accelerator=gpu.")
    if acc in ("gpu", "cuda") and t.devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices: {t.devices} requested, {torch.cuda.device_count()} CUDA devices visible.")


def resolve_precision(cfg: RunConfig) -> tuple[RunConfig, dict]:
    """`auto` precision and channels_last -> the values this machine runs fast (a new frozen config; explicit
    values are kept), and the record run.json keeps of what was asked and what is used."""
    t, acc = cfg.trainer, _accelerator(cfg)
    gpu = acc in ("gpu", "cuda")
    cpu_bf16 = cpu_has_bf16()
    if t.precision != "auto":
        precision = t.precision
    elif gpu:
        # native bf16 only (Ampere and later): emulated bf16 on older GPUs is slower than fp32
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "32"
    else:
        precision = "bf16-mixed" if acc == "cpu" and cpu_bf16 else "32"
    channels_last = t.channels_last if t.channels_last != "auto" else gpu or precision == "bf16-mixed"
    used = replace(cfg, trainer=replace(t, precision=precision, channels_last=channels_last))
    return used, {"requested": t.precision, "used": precision, "channels_last": channels_last,
                  "channels_last_requested": t.channels_last, "cpu_bf16": cpu_bf16}


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    t = cfg.trainer
    knn = bool(t.knn_monitor_every and cfg.data.val_per_class)
    monitor, mode, every = ("monitor/knn_top1", "max", t.knn_monitor_every) if knn else ("train/loss_epoch", "min", 1)
    ckpt_dir = run_dir / "checkpoints"
    last = LastEveryEpoch(ckpt_dir, every_n_steps=t.checkpoint_every_n_steps)
    best = AtomicCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           every_n_epochs=every, save_on_train_epoch_end=True, enable_version_counter=False)
    # last after best: last.ckpt carries best's updated state
    cbs = [*callbacks, best, last, LearningRateMonitor(logging_interval="step"), Throughput()]
    if t.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    accelerator = _accelerator(cfg)
    return pl.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, sync_batchnorm=t.sync_batchnorm,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress_bar,
        limit_train_batches=t.limit_train_batches, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, callbacks=cbs, deterministic=accelerator == "cpu",
        logger=build_loggers(cfg, run_dir),
        enable_model_summary=t.progress_bar,
    )


def run(cfg: RunConfig | None = None, resume: str | Path | None = None, callbacks: Sequence[pl.Callback] = (),
        splits=None) -> RunResult:
    """Pretrain per `cfg`, or continue the run in directory `resume` from its last checkpoint."""
    tune_cpu_allocator()
    if resume is not None:
        run_dir = Path(resume)
        cfg, ckpt, recorded = resumable(run_dir)
        _check_not_running(run_dir)
    elif cfg is None:
        raise ValueError("run() needs a config or a run directory to resume")
    check_device_options(cfg)  # new runs and resumed ones alike: a run may move to another machine
    if resume is not None:
        done = _finished(run_dir, cfg)
        if done is not None:  # resuming would retrain nothing and reset the record's metrics and times
            return done
    # before anything is created: config.yaml and the checkpoints hold the resolved values, so a resume on
    # another machine runs at the precision the run started with
    cfg, precision = resolve_precision(cfg)
    check_loggers(cfg)
    # the policy as resolved when the run started (a resumed run ignores later edits to the file)
    resolved = load_policy(cfg.policy if resume is None else run_dir / "policy.yaml")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = SimCLRDataModule(cfg.data, seed=cfg.seed, splits=splits)
    dm.setup()  # bad data fails here, before a run directory exists
    check_policy_fits(resolved, dm.channels)
    check_fits(cfg.model, dm.channels, input_size(resolved, int(dm.splits["train"].images.shape[-1])))
    if resume is None:
        run_dir, ckpt = new_run_dir(cfg), None
    try:
        if resume is None:
            save_config(cfg, run_dir / "config.yaml")
            (run_dir / "policy.yaml").write_text(resolved.to_yaml())
            _write_status(run_dir, package_version=simclr.__version__, git_commit=git_commit(),
                          torch=torch.__version__, warnings=class_warnings(dm.splits), precision=precision)
        elif not (run_dir / "run.json").exists() or "precision" not in json.loads((run_dir / "run.json").read_text()):
            _write_status(run_dir, precision=precision)  # a run recorded before `auto`: what it resumes with
        policy = yaml.safe_load((run_dir / "policy.yaml").read_text())
        module = SimCLRModule(to_dict(cfg) if resume is None else recorded, dm.channels, dm.num_classes, policy,
                              image_size=int(dm.splits["train"].images.shape[-1]))  # fit() restores ckpt state
        monitor = KNNMonitor(dm.splits["train"], dm.splits["val"], cfg.trainer.knn_monitor_every,
                             cfg.eval.monitor_k, cfg.eval.knn_temperature)
        rate = EpochRate()
        trainer = build_trainer(cfg, run_dir, [monitor, rate, *callbacks])
    except BaseException:
        if resume is None:  # a run that never started leaves no stub (it would push the next run to name-2)
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    cpu = {**cpu_state(), "load_avg_start": load_avg()}  # this training segment's (a resume records its own)
    _write_status(run_dir, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"), process=this_process(),
                  cpu=cpu, throughput=rate.summary())

    def measured() -> dict:
        return {"cpu": {**cpu, "load_avg_end": load_avg()}, "throughput": rate.summary()}
    log.info("run directory: %s", run_dir)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    except (SystemExit, SIGTERMException) as e:  # Lightning ends a Ctrl-C with sys.exit(1) after shutting down
        epochs = LastEveryEpoch.completed_epochs(trainer)
        _write_status(run_dir, status="interrupted", epoch=epochs, **measured())
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning leaves Ctrl-C ignored
        if isinstance(e, SIGTERMException) or trainer.interrupted:
            raise RunInterrupted(run_dir, epochs,
                                 "SIGTERM" if isinstance(e, SIGTERMException) else "SIGINT") from None
        raise
    except Exception as e:  # a damaged file, a bug: failed, not interrupted; --resume continues it once fixed
        _write_status(run_dir, status="failed", epoch=LastEveryEpoch.completed_epochs(trainer),
                      error=error_summary(e), **measured())
        raise
    except BaseException:
        _write_status(run_dir, status="interrupted", epoch=LastEveryEpoch.completed_epochs(trainer), **measured())
        raise
    done = trainer.current_epoch >= cfg.trainer.max_epochs
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    _write_status(run_dir, status="finished" if done else "stopped", epoch=trainer.current_epoch,
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"), metrics=metrics, **measured())
    best = run_dir / "checkpoints" / "best.ckpt"
    return RunResult(run_dir, run_dir / "checkpoints" / "last.ckpt", best if best.exists() else None, metrics)
