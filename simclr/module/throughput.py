"""Training throughput as a callback: images per second over each logging window.

Not Lightning's ThroughputMonitor: that one calls torch.cuda.synchronize() after every batch. A window
of up to `log_every_n_steps` batches timed on the host needs no sync: with a full CUDA queue the host waits
for the device anyway, and the first window of each epoch (data setup, the kNN monitor) is skipped.
"""
from __future__ import annotations

import time

import pytorch_lightning as pl


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
