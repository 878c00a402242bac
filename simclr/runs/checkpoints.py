"""The run's checkpoint files: last.ckpt at the end of every epoch, best.ckpt, both written atomically, and
reading a checkpoint back safely.

Lightning's `ModelCheckpoint(save_last=True, save_top_k=0)` writes last.ckpt only in an epoch where another
checkpoint is saved, so a run stopped after epoch 1 of 4 could not be resumed. `LastEveryEpoch` saves every
epoch, to a temporary file first: a kill -9 during the write leaves the previous last.ckpt intact.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from simclr.config.schema import ConfigError
from simclr.runs.layout import BEST, LAST, checkpoint_dir


class AtomicCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose file is complete or absent: written to `<name>.partial`, then renamed."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath
        trainer.strategy.barrier()


class LastEveryEpoch(AtomicCheckpoint):
    """checkpoints/last.ckpt after every training epoch (a ModelCheckpoint, so Lightning runs it after
    the metric-producing callbacks such as the kNN monitor; list it after `best` so its file holds best's
    updated state)."""

    def __init__(self, dirpath: Path, every_n_steps: int = 0):
        super().__init__(dirpath=dirpath, filename=Path(LAST).stem, monitor=None, save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)
        self.saved_epochs = 0  # completed epochs in the file this run last wrote
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """trainer.checkpoint_every_n_steps: the same file mid-epoch (the checkpoint records how far the epoch
        got; a resume continues there exactly). Not on an epoch's last batch: the epoch-end save follows."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.every_n_steps
        if n and trainer.global_step % n == 0 and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            AtomicCheckpoint._save_checkpoint(self, trainer, str(Path(self.dirpath) / LAST))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # saved inside on_train_epoch_end, before Lightning counts the epoch as done: a Ctrl-C landing now
        # would otherwise be reported as one epoch short of what last.ckpt holds. The count follows the file
        # itself (its atomic rename), even when the Ctrl-C lands between the rename and this method's end.
        def stamp():
            try:
                return os.stat(filepath).st_mtime_ns
            except OSError:
                return None
        before = stamp()
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            if stamp() != before:
                self.saved_epochs = trainer.current_epoch + 1

    @staticmethod
    def completed_epochs(trainer) -> int:
        """Epochs a resume of this run would start after: what last.ckpt holds, never less than the trainer's count."""
        saved = max((cb.saved_epochs for cb in trainer.callbacks if isinstance(cb, LastEveryEpoch)), default=0)
        return max(saved, trainer.current_epoch)


def checkpoint_callbacks(run_dir: Path, monitor: str, mode: str, every_n_epochs: int,
                         every_n_steps: int = 0) -> list[ModelCheckpoint]:
    """[best, last] for a run directory: best.ckpt by `monitor` (checked every `every_n_epochs`), and last.ckpt
    after every epoch (and every `every_n_steps` steps). In this order, so last.ckpt carries best's updated state."""
    folder = checkpoint_dir(run_dir)
    best = AtomicCheckpoint(dirpath=folder, filename=Path(BEST).stem, monitor=monitor, mode=mode, save_top_k=1,
                            every_n_epochs=every_n_epochs, save_on_train_epoch_end=True, enable_version_counter=False)
    return [best, LastEveryEpoch(folder, every_n_steps=every_n_steps)]


def read_checkpoint(ckpt: Path, error: type[ConfigError] = ConfigError, action: str = "be read") -> dict:
    """The checkpoint's contents, loaded without unpickling arbitrary objects, or one `error` line saying why
    not in the user's terms (torch's own message ends by suggesting weights_only=False, which for an untrusted
    file is the one thing not to do)."""
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, another format, a pickle of arbitrary objects
        raise error(f"{ckpt}: cannot {action}; it is not a tensors-only checkpoint (truncated, another format, or "
                    "holding Python objects, which simclr never unpickles). Use a checkpoint written by simclr.") \
            from None
