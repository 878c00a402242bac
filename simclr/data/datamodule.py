"""Dataset loading by config, seeded per-class subsets, and the LightningDataModule.

Batches are uint8 (B, C, H, W) tensors sliced straight from memory (no per-sample collate, no
workers): augmentation happens later, on the model's device.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from simclr.config.run import DataConfig
from simclr.data.formats import (DataError, ImageData, is_cifar_pickle, read_cifar_pickle, read_digits, read_idx,
                                 read_stl10)
from simclr.data.imagefolder import cache_dir, read_imagefolder, split_folder
from simclr.data.sampler import SeededBatchSampler
from simclr.data.splits import (check_compatible_splits, holdout_indices, per_class_indices, refuse_unused_holdout,
                                split_indices)


def _resize(data: ImageData, size: int | None) -> ImageData:
    if size is None or data.images.shape[-1] == size == data.images.shape[-2]:
        return data
    from torchvision.transforms.v2.functional import resize
    return ImageData(resize(data.images, [size, size], antialias=True), data.labels, data.classes)


def load_split(cfg: DataConfig, split: str) -> ImageData:
    """One split ('train', 'test', 'unlabeled', 'train+unlabeled') of the configured dataset."""
    if "+" in split:
        parts = [load_split(cfg, s) for s in split.split("+")]
        return ImageData(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), parts[0].classes)
    if cfg.name == "digits":
        return _resize(read_digits(split), cfg.image_size)
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist (dataset '{cfg.name}').")
    if cfg.name in ("cifar10", "cifar100") and is_cifar_pickle(path):
        refuse_unused_holdout(cfg, path)
        data = read_cifar_pickle(path, split, cifar100=cfg.name == "cifar100")
    elif cfg.name == "fashion_mnist":
        data = read_idx(path, split)
    elif cfg.name == "stl10":
        data = read_stl10(path, split)
    else:  # an ImageFolder tree or archive (imagefolder, or cifar10/cifar100 as image files)
        data = _read_tree(cfg, path, split)
    return _resize(data, cfg.image_size)


def _read_tree(cfg: DataConfig, path: Path, split: str) -> ImageData:
    """A split of an ImageFolder tree: its split folder, or of a flat tree (<class>/<image>) the held-out test
    images for 'test' and the rest for any other split, never the same images for both."""
    folder = cfg.test_split if split == "test" else split  # a tree names its own test folder
    tree_split = split_folder(path, folder, required=folder != split)
    if tree_split is not None:
        refuse_unused_holdout(cfg, path)
        return read_imagefolder(path, tree_split, cfg.image_size, cache_dir(cfg.cache_dir))
    data = read_imagefolder(path, None, cfg.image_size, cache_dir(cfg.cache_dir))
    kept, held = holdout_indices(data.labels, data.classes, cfg.holdout_fraction, str(path))
    return data.subset(held if split == "test" else kept)


def make_splits(cfg: DataConfig, seed: int) -> dict[str, ImageData]:
    """train (for SSL), val (held out from train: kNN monitor, probe weight decay), test (of a flat tree: held
    out of it, see splits.holdout_indices). With data.loader=stream, "train" is the in-memory evaluation subset
    (see simclr.data.stream)."""
    if cfg.loader == "stream":
        from simclr.data.stream import stream_splits
        return stream_splits(cfg, seed)[0]
    full = load_split(cfg, cfg.train_split)
    train_idx, val_idx = split_indices(full.labels, cfg, seed)
    test = load_split(cfg, "test")
    check_compatible_splits(cfg, full, test, val_idx)
    if cfg.test_per_class:
        test = test.subset(per_class_indices(test.labels, cfg.test_per_class, seed + 2))
    splits = {"train": full.subset(train_idx), "val": full.subset(val_idx), "test": test}
    if len(splits["train"]) < cfg.batch_size:
        raise DataError(f"data.batch_size={cfg.batch_size} exceeds the {len(splits['train'])} training images; "
                        "lower data.batch_size or raise data.train_per_class.")
    return splits


class BatchIndexDataset(Dataset):
    """dataset[list_of_indices] -> (uint8 images, labels) in one tensor index."""

    def __init__(self, data: ImageData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        return self.data.images[index], self.data.labels[index]


def batch_loader(data: ImageData, batch_size: int, seed: int = 0, shuffle: bool = False, drop_last: bool = False,
                 rank: int = 0, world: int = 1, pin_memory: bool = False) -> DataLoader:
    sampler = SeededBatchSampler(len(data), batch_size, seed, shuffle, drop_last, rank, world)
    return DataLoader(BatchIndexDataset(data), sampler=sampler, batch_size=None, pin_memory=pin_memory)


class SimCLRDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig, seed: int = 0, splits: dict[str, ImageData] | None = None):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.splits = splits
        self.stream = None  # with data.loader=stream: (StreamIndex, the training images' ids in it)
        self.resume: tuple[int, int] | None = None  # (epoch, batches done in it), from a checkpoint

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None and self.cfg.loader == "stream":
            from simclr.data.stream import stream_splits
            self.splits, self.stream = stream_splits(self.cfg, self.seed)
        elif self.splits is None:
            self.splits = make_splits(self.cfg, self.seed)

    @property
    def channels(self) -> int:
        self.setup()
        return self.splits["train"].images.shape[1]

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.splits["train"].classes)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        pin = trainer is not None and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        if self.cfg.loader == "stream":
            from simclr.data.stream import default_workers, stream_loader
            index, ids = self.stream
            workers = self.cfg.num_workers if self.cfg.num_workers is not None else \
                default_workers(trainer.num_devices if trainer is not None else 1)
            loader = stream_loader(index, self.cfg.image_size, self.cfg.batch_size, self.seed, shuffle=True,
                                   drop_last=True, rank=rank, world=world, num_workers=workers,
                                   pin_memory=pin, ids=ids, decode_in_worker=self.cfg.decode_device == "cpu")
        else:
            loader = batch_loader(self.splits["train"], self.cfg.batch_size, self.seed, shuffle=True,
                                  drop_last=True, rank=rank, world=world, pin_memory=pin)
        if self.resume is not None:
            loader.sampler.resume_at(*self.resume)
        return loader

    # Lightning saves this in every checkpoint and hands it back on resume before it builds the training loader.
    # The loader must learn where to start from here, not from the trainer's restored loop progress: the
    # schedule's `estimated_stepping_batches` makes Lightning build the loader, and start its first pass
    # (workers fetch ahead), before it restores that progress (Lightning issue #20550), and the resumed epoch
    # runs on that first pass.
    def state_dict(self) -> dict:
        """Where a resumed run's sampler starts: the epoch in progress and the batches of it already trained on
        (saved at the end of an epoch: the next epoch, from its first batch)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        self.resume = (int(state["epoch"]), int(state["batches_done"]))
