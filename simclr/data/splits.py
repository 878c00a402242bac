"""How one dataset becomes the train, val and test splits: seeded per-class subsets, the test split held out
of a flat ImageFolder tree, and the checks that the splits fit together. The in-memory (datamodule) and
streamed (stream) loaders both split through here, so a run's splits do not depend on which loader read the
images."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from simclr.config.run import HOLDOUT_FRACTION, DataConfig
from simclr.data.formats import DataError, ImageData, is_cifar_pickle
from simclr.data.imagefolder import split_folder

# Fixed, not the run's seed: every seed and every arm of a study tests on the same images (the paired
# test-sampling error of ablate.stats assumes it), and `simclr evaluate RUN seed=N` cannot move images that
# pretraining saw into the test split.
HOLDOUT_SEED = 0
HELD_OUT = "held out of a flat tree"


def flat_tree(cfg: DataConfig) -> bool:
    """Whether the data is an ImageFolder tree without split folders (<class>/<image>): its test split is then
    held out of it (holdout_indices). Archives and .tar shards always carry split folders."""
    if cfg.name not in ("imagefolder", "cifar10", "cifar100") or not cfg.path:
        return False
    path = Path(cfg.path).expanduser()
    if not path.is_dir() or (cfg.name != "imagefolder" and is_cifar_pickle(path)):
        return False
    return split_folder(path, cfg.train_split) is None


def holdout_indices(labels: torch.Tensor, classes: tuple[str, ...], fraction: float, source: str,
                    seed: int = HOLDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) indices of a flat tree: floor(fraction x n) of each class's n images held out as the test
    split, the rest kept for training (pretraining, the probes' train and val). Drawn from the class's images in
    (class, name) order, the order both readers sort into, so the draw does not follow the order in which the
    file system lists them; each class from its own generator, seeded by `seed` and the class name, so adding a
    class moves no other class's test images. An empty class folder holds nothing out (class_warnings names it)."""
    if fraction <= 0:
        raise DataError(f"{source}: a flat tree (<class>/<image>, no train/ and test/ folders) is tested on images "
                        "held out of it, and data.holdout_fraction=0 holds none out, so the training images would be "
                        f"the test set; set data.holdout_fraction in (0, 0.9] (default {HOLDOUT_FRACTION}) or give "
                        "the tree train/ and test/ folders.")
    held = []
    for c, name in enumerate(classes):
        idx = torch.nonzero(labels == c).squeeze(1)
        k = int(fraction * len(idx) + 1e-9)  # floor; the epsilon keeps 0.3 x 10 at 3, not 2.9999...
        if k == 0 and len(idx):
            need, lowest = math.ceil(1 / fraction - 1e-9), math.ceil(100 / len(idx)) / 100
            raise DataError(f"{source}: class '{name}' has {len(idx)} image(s), too few to hold any out as its test "
                            f"split at data.holdout_fraction={fraction} (floor of {fraction} x {len(idx)} is 0); give "
                            f"it at least {need} images" + (f" or set data.holdout_fraction to {lowest} or more."
                                                            if lowest <= 0.9 else "."))
        # torch's CPU generator keeps 32 bits of its seed: the seed and the name are mixed into those
        g = torch.Generator().manual_seed(zlib.crc32(f"{seed}|{name}".encode()))
        held.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    held_idx = torch.sort(torch.cat(held)).values if held else torch.empty(0, dtype=torch.int64)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_idx] = False
    return torch.nonzero(keep).squeeze(1), held_idx


def refuse_unused_holdout(cfg: DataConfig, path: Path) -> None:
    """A data.holdout_fraction set for data that has its own test split would be ignored: refused, not ignored."""
    if cfg.holdout_fraction != HOLDOUT_FRACTION:
        raise DataError(f"data.holdout_fraction: {cfg.holdout_fraction} would be ignored: {path} has its own test "
                        f"split ('{cfg.test_split}'); the key holds out the test split of a flat <class>/<image> "
                        "tree. Drop it.")


def test_split_record(cfg: DataConfig, test: ImageData) -> dict:
    """What the test split is (run.json's and results.json's `test_split`)."""
    if flat_tree(cfg):
        return {"source": HELD_OUT, "fraction": cfg.holdout_fraction, "seed": HOLDOUT_SEED,
                "per_class": "floor(fraction x the class's images); the rest is the training side", "n": len(test)}
    return {"source": "the dataset's test split", "split": cfg.test_split, "n": len(test)}


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
