"""last.ckpt at the end of every epoch, written atomically, and the checks a resume makes before it starts.

Lightning's `ModelCheckpoint(save_last=True, save_top_k=0)` writes last.ckpt only in an epoch where another
checkpoint is saved, so a run stopped after epoch 1 of 4 could not be resumed. `LastEveryEpoch` saves every
epoch, to a temporary file first: a kill -9 during the write leaves the previous last.ckpt intact.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from simclr.config.files import read_yaml
from simclr.config.run import STREAM_ONLY, RunConfig, config_from_dict, data_section, load_config
from simclr.config.schema import ConfigError, to_dict


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
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)
        self.saved_epochs = 0  # completed epochs in the file this run last wrote
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """trainer.checkpoint_every_n_steps: the same file mid-epoch (the checkpoint records how far the epoch
        got; a resume continues there exactly). Not on an epoch's last batch: the epoch-end save follows."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.every_n_steps
        if n and trainer.global_step % n == 0 and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            AtomicCheckpoint._save_checkpoint(self, trainer, str(Path(self.dirpath) / "last.ckpt"))

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


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): list(tree) if isinstance(tree, tuple) else tree}


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


def resumable(run_dir: Path) -> tuple[RunConfig, Path, dict]:
    """(config, last checkpoint, the config as the checkpoint records it) of a run that can be continued, or one
    ConfigError saying why not. The resumed run records that same dict in its checkpoints, so keys that today's
    schema drops (see config.run.as_stored) stay as written in config.yaml and a later resume still matches."""
    config_file, ckpt = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    if not config_file.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
    if not ckpt.is_file():
        raise ConfigError(f"--resume {run_dir}: no checkpoints/last.ckpt (the run stopped before its first epoch "
                          "ended); start it afresh.")
    cfg = load_config(config_file, stored=True)
    blob = read_checkpoint(ckpt, action="be resumed from")
    try:
        saved = blob["hyper_parameters"]["config"]
    except (KeyError, TypeError):
        raise ConfigError(f"{ckpt}: cannot be resumed from; it is not a simclr checkpoint (no "
                          "hyper_parameters.config).") from None
    try:  # both read by today's schema, so keys it adds or drops at their defaults are no edit
        then = flatten(to_dict(config_from_dict(saved)))
    except (ConfigError, TypeError):
        then = flatten(saved if isinstance(saved, dict) else {})
    now = flatten(to_dict(cfg))
    changed = [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(now) | set(then))
               if now.get(k) != then.get(k)]
    # the stream-only keys the stored reading drops for the in-memory loader: compared as written
    written, recorded = data_section(read_yaml(config_file, "config file")), data_section(saved)
    changed += [f"data.{k}: {recorded.get(k)!r} -> {written.get(k)!r}" for k in STREAM_ONLY
                if written.get(k) != recorded.get(k)]
    if changed:
        raise ConfigError(f"{config_file}: edited after the run started ({'; '.join(changed[:4])}); a resume "
                          "continues the run as it was started. Restore the file, or start a new run.")
    return cfg, ckpt, saved
