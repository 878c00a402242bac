"""Streamed images for datasets larger than memory: decoded and resized in DataLoader workers, one batch at a time.

Sources: an ImageFolder tree (`<class>/<image>`, optionally under `train/` and `test/`) or uncompressed tar
shards (one `.tar`, or a folder of `*.tar`, with members `[<split>/]<class>/<image>`). What is held in memory
is an index: (file, byte offset, byte size, label) per image, 28 bytes; pixels exist only for the batches in
flight. The index is sorted by (class, name) exactly like `imagefolder.read_imagefolder`, so image i of the
streamed path is image i of the in-memory path, decoded by the same code (`imagefolder._decode`).

Why not WebDataset: its shards are read front to back through a shuffle buffer, so the order is not a
permutation drawn from (seed, epoch) and a run cannot continue mid-epoch without replaying the epoch. Reading
tar members at their byte offsets gives both: the order is the project's `SeededBatchSampler` (one
permutation per (seed, epoch), strided across DDP ranks), and resuming skips the served batches' indices.
Compressed archives (.tar.gz) cannot be read at an offset; unpack them once (`tar -xzf`) or repack as .tar.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from simclr.data.datamodule import SeededBatchSampler, per_class_indices, split_indices
from simclr.data.formats import IMAGE_EXTENSIONS, DataError, ImageData
from simclr.data.imagefolder import _decode, split_folder


class StreamIndex:
    """Where each image's bytes are: files[file_of[i]] at offset[i], size[i] bytes (-1: the whole file)."""

    def __init__(self, files: list[str], entries: list[tuple[str, str, int, int, int]], source: str):
        # entries: (class, name within its tree or shard, file number, offset, size)
        classes = tuple(sorted({e[0] for e in entries}))
        if not classes:
            raise DataError(f"{source}: no images found; expected <class>/<image>{IMAGE_EXTENSIONS[0]} files "
                            "or .tar shards of them.")
        entries.sort(key=lambda e: (e[0], e[1]))
        label = {c: i for i, c in enumerate(classes)}
        self.files, self.classes = tuple(files), classes
        self.names = [f"{Path(files[e[2]]).name}:{e[1]}" if e[4] >= 0 else e[1] for e in entries]  # for errors
        self.file_of = torch.tensor([e[2] for e in entries], dtype=torch.int32)
        self.offset = torch.tensor([e[3] for e in entries], dtype=torch.int64)
        self.size = torch.tensor([e[4] for e in entries], dtype=torch.int64)
        self.labels = torch.tensor([label[e[0]] for e in entries], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)


def _wanted(parts: tuple[str, ...], split: str | None) -> bool:
    if len(parts) < 2 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return False
    return split is None or (len(parts) >= 3 and parts[-3] == split)


def index_images(path: str | Path, split: str | None = None) -> StreamIndex:
    """Index an ImageFolder tree or tar shards without reading any pixels."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist.")
    if path.name.endswith((".tar.gz", ".tgz", ".gz")):
        raise DataError(f"data.path: {path} is compressed and cannot be streamed (no reads at an offset); "
                        f"unpack it once (`tar -xzf {path.name}`) and point data.path at the folder, or repack "
                        "it as uncompressed .tar shards.")
    shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
    files, entries = [], []
    if shards:
        for shard in shards:
            try:
                with tarfile.open(shard, "r:") as tar:
                    for m in tar:
                        parts = Path(m.name).parts
                        if m.isfile() and _wanted(parts, split):
                            entries.append((parts[-2], m.name, len(files), m.offset_data, m.size))
            except (tarfile.TarError, OSError) as e:
                raise DataError(f"{shard}: cannot read as an uncompressed tar shard ({e}).") from None
            files.append(str(shard))
    else:
        root = path / split if split is not None and (path / split).is_dir() else path
        for f in sorted(root.glob("*/*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                entries.append((f.parent.name, str(f), len(files), 0, -1))
                files.append(str(f))
    if split is not None and not entries:
        raise DataError(f"{path}: no images under a '{split}/' folder; expected <...>/{split}/<class>/<image>.")
    return StreamIndex(files, entries, str(path))


class StreamedImages(Dataset):
    """dataset[batch of positions] -> (uint8 (B, C, size, size), labels), decoded in the worker that asks.
    Position p is image ids[p] of the index (all images when ids is None)."""

    def __init__(self, index: StreamIndex, image_size: int | None, ids: torch.Tensor | None = None):
        self.index, self.image_size = index, image_size
        self.ids = torch.arange(len(index)) if ids is None else ids
        self._handles: dict[int, object] = {}  # per worker process: open shards, reused

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, i: int) -> bytes:
        f, offset, size = int(self.index.file_of[i]), int(self.index.offset[i]), int(self.index.size[i])
        if size < 0:
            return Path(self.index.files[f]).read_bytes()
        if f not in self._handles:
            self._handles[f] = open(self.index.files[f], "rb")  # noqa: SIM115 - kept open for the worker's life
        fh = self._handles[f]
        fh.seek(offset)
        return fh.read(size)

    def __getitem__(self, positions: torch.Tensor):
        ids = [int(i) for i in self.ids[positions]]
        images = _decode([self._read(i) for i in ids], self.image_size, [self.index.names[i] for i in ids])
        return images, self.index.labels[ids]

    def __getstate__(self):  # open files do not travel to worker processes
        return {**self.__dict__, "_handles": {}}


class StreamLoader(DataLoader):
    """Whole uint8 batches from the workers (the sampler hands each worker one batch of positions)."""

    def __init__(self, dataset: StreamedImages, sampler: SeededBatchSampler, num_workers: int = 0, **kw):
        super().__init__(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                         persistent_workers=num_workers > 0, **kw)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Passes over epoch `epoch` yield it from batch `batches_done` on, as an uninterrupted run would."""
        self.sampler.resume_at(epoch, batches_done)


def stream_loader(index: StreamIndex, image_size: int | None, batch_size: int, seed: int = 0, shuffle: bool = True,
                  drop_last: bool = True, rank: int = 0, world: int = 1, num_workers: int = 0,
                  pin_memory: bool = False, ids: torch.Tensor | None = None) -> StreamLoader:
    dataset = StreamedImages(index, image_size, ids)
    sampler = SeededBatchSampler(len(dataset), batch_size, seed, shuffle, drop_last, rank, world)
    return StreamLoader(dataset, sampler, num_workers=num_workers, pin_memory=pin_memory)


def decode_subset(index: StreamIndex, image_size: int, ids: torch.Tensor) -> ImageData:
    images, labels = StreamedImages(index, image_size, ids)[torch.arange(len(ids))]
    return ImageData(images, labels, index.classes)


def stream_splits(cfg, seed: int) -> tuple[dict[str, ImageData], tuple[StreamIndex, torch.Tensor]]:
    """The streamed training set (index + ids), and in memory only what evaluation needs: "train" =
    data.stream_eval_per_class labelled images per class of it, "val" and "test" as with the in-memory path."""
    path = Path(cfg.path).expanduser()
    index = index_images(path, split_folder(path, cfg.train_split))
    train_ids, val_ids = split_indices(index.labels, cfg, seed)
    if len(train_ids) < cfg.batch_size:
        raise DataError(f"data.batch_size={cfg.batch_size} exceeds the {len(train_ids)} training images; "
                        "lower data.batch_size or raise data.train_per_class.")
    bank = train_ids[per_class_indices(index.labels[train_ids], cfg.stream_eval_per_class, seed + 3)]
    test_index = index_images(path, split_folder(path, cfg.test_split))
    test_ids = per_class_indices(test_index.labels, cfg.test_per_class, seed + 2) if cfg.test_per_class else \
        torch.arange(len(test_index))
    splits = {"train": decode_subset(index, cfg.image_size, bank), "val": decode_subset(index, cfg.image_size, val_ids),
              "test": decode_subset(test_index, cfg.image_size, test_ids)}
    return splits, (index, train_ids)
