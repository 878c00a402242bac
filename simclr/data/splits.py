"""How one dataset becomes the train, val and test splits: seeded per-class subsets and the checks that the
splits fit together. The in-memory (datamodule) and streamed (stream) loaders both split through here, so a
run's splits do not depend on which loader read the images."""
from __future__ import annotations

import torch

from simclr.config.run import DataConfig
from simclr.data.formats import DataError, ImageData


def per_class_indices(labels: torch.Tensor, n: int, seed: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Seeded choice of up to n indices per class (labels >= 0), optionally avoiding `exclude`."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    picked = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        idx = torch.nonzero((labels == c) & allowed).squeeze(1)
        picked.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.sort(torch.cat(picked)).values if picked else torch.empty(0, dtype=torch.int64)


def check_compatible_splits(cfg: DataConfig, train: ImageData, test: ImageData, val_idx: torch.Tensor) -> None:
    """One class list and one image shape for every split; a requested per-class count that exists."""
    where = f"data.path ({cfg.path or cfg.name})"
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        detail = "; ".join(s for s in (f"only in train: {only_train}" if only_train else "",
                                       f"only in test: {only_test}" if only_test else "") if s) or \
            "the same names in another order"
        raise DataError(f"{where}: train and test have different class lists ({detail}); labels would not mean "
                        "the same class. Give both splits the same class folders (an empty folder is allowed).")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{where}: test images are {tuple(test.images.shape[1:])} (C, H, W) but train images are "
                        f"{tuple(train.images.shape[1:])}; set data.image_size to resize both splits alike.")
    if cfg.train_per_class:
        held = torch.zeros(len(train), dtype=torch.bool)
        held[val_idx] = True
        for c, name in enumerate(train.classes):
            n = int(((train.labels == c) & ~held).sum())
            if 0 < n < cfg.train_per_class:
                raise DataError(f"data.train_per_class: {cfg.train_per_class} requested but class '{name}' has only "
                                f"{n} training images (after data.val_per_class={cfg.val_per_class} held out); "
                                f"use at most {n}.")


def class_warnings(splits: dict[str, ImageData]) -> list[str]:
    """Classes that exist but have no training images (e.g. an empty class folder): scores for them mean little."""
    train = splits["train"]
    counts = torch.bincount(train.labels[train.labels >= 0], minlength=len(train.classes))
    if not (train.labels >= 0).any():
        return []
    return [f"class '{name}' has no training images" for name, n in zip(train.classes, counts.tolist()) if n == 0]


def split_indices(labels: torch.Tensor, cfg: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: val held out per class (seed + 1), train a per-class subset (seed) or the rest."""
    val_idx = per_class_indices(labels, cfg.val_per_class, seed + 1) if cfg.val_per_class else \
        torch.empty(0, dtype=torch.int64)
    if cfg.train_per_class:
        train_idx = per_class_indices(labels, cfg.train_per_class, seed, exclude=val_idx)
        unlabeled = torch.nonzero(labels < 0).squeeze(1)
        train_idx = torch.sort(torch.cat([train_idx, unlabeled])).values
    else:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[val_idx] = False
        train_idx = torch.nonzero(keep).squeeze(1)
    return train_idx, val_idx
