"""Training throughput as callbacks: images per second over each logging window (the progress bar, the
loggers) and per epoch (run.json, and a warning when other processes slow the run down).

Not Lightning's ThroughputMonitor: that one calls torch.cuda.synchronize() after every batch. A window
of up to `log_every_n_steps` batches timed on the host needs no sync: with a full CUDA queue the host waits
for the device anyway, and the first window of each epoch (data setup, the kNN monitor) is skipped.
"""
from __future__ import annotations

import logging
import os
import time

import pytorch_lightning as pl
import torch

from simclr.utils import usable_cores

log = logging.getLogger("simclr")


class Throughput(pl.Callback):
    def __init__(self) -> None:
        self._start: float | None = None
        self._images = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start, self._images = None, 0

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int):
        now = time.perf_counter()
        if self._start is None:  # the window starts after the epoch's first batch
            self._start, self._images = now, 0
            return
        self._images += batch[0].shape[0] * trainer.world_size   # (v1, v2, labels): source images (2 views each)
        # a Python float every step (whichever step Lightning writes out is a window average); no device sync
        module.log("throughput/img_per_s", self._images / (now - self._start), prog_bar=True, on_step=True,
                   on_epoch=False, batch_size=1)
        if (batch_idx + 1) % trainer.log_every_n_steps == 0:
            self._start, self._images = now, 0


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def cpu_state() -> dict:
    """The CPU this process trains on, for run.json: the cores it may use, torch's threads and the thread
    settings of its environment (the local launcher sets them per job)."""
    return {"cores": usable_cores(), "torch_threads": torch.get_num_threads(),
            "env": {k: os.environ.get(k) for k in THREAD_ENV}}


def load_avg() -> list[float]:
    """The machine's load averages over 1, 5 and 15 minutes (runnable processes, all users)."""
    return [round(x, 2) for x in os.getloadavg()]


class EpochRate(pl.Callback):
    """Train images/s of every epoch, timed from the end of its first batch to the end of its last (data setup,
    the kNN monitor and checkpoints are left out), and one warning per run when other processes take the CPU
    (two arms each using every core, say; docs/benchmarks.md): an epoch trains at under `slow` x this run's
    fastest epoch while the 1-min load average exceeds the machine's cores, or, from the second epoch on, the
    load exceeds them by more than one whole process — contention from the start leaves no fast epoch to
    compare with. `cores`: the machine's (the load average counts every process on it, whatever this process's
    affinity)."""

    def __init__(self, slow: float = 0.5, cores: int | None = None) -> None:
        self.slow, self.cores = slow, cores or os.cpu_count() or 1
        self.rates: list[float] = []   # img/s of each timed epoch of this training segment
        self.warning: str | None = None
        self._first: float | None = None
        self._last: float | None = None
        self._images = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._first = self._last = None
        self._images = 0

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int):
        now = time.perf_counter()
        if self._first is None:
            self._first = now
            return
        self._images += batch[0].shape[0] * trainer.world_size
        self._last = now

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._last is not None and self._last > self._first:  # an epoch of one batch times nothing
            self.epoch_done(trainer.current_epoch, self._images / (self._last - self._first), trainer.is_global_zero)

    def epoch_done(self, epoch: int, rate: float, report: bool = True) -> None:
        fastest = max(self.rates, default=rate)
        self.rates.append(rate)
        if self.warning is not None:
            return
        load = os.getloadavg()[0]
        if load <= self.cores:
            return
        if rate < self.slow * fastest:
            why = f"{rate / fastest:.1f}x this run's fastest epoch; load average {load:.1f} on {self.cores} cores"
        elif len(self.rates) >= 2 and load > self.cores + 1:
            why = f"with a load average of {load:.1f} on {self.cores} cores (more runnable threads than cores)"
        else:
            return
        self.warning = (f"warning: epoch {epoch} trained at {rate:.0f} img/s, {why} — other processes share this "
                        "CPU (docs/benchmarks.md)")
        if report:
            log.warning(self.warning)

    def summary(self) -> dict:
        """run.json's `throughput`: train images/s per epoch (mean, last, fastest) over this training segment."""
        r = self.rates
        return {"train_img_per_s_mean": round(sum(r) / len(r), 1) if r else None,
                "train_img_per_s_last": round(r[-1], 1) if r else None,
                "train_img_per_s_fastest": round(max(r), 1) if r else None,
                "epochs_timed": len(r), "contention_warning": self.warning}
