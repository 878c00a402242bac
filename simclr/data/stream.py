"""Streamed images for datasets larger than memory: decoded and resized in DataLoader workers, one batch at a time.

Sources: an ImageFolder tree (`<class>/<image>`, optionally under `train/` and `test/`) or uncompressed tar
shards (one `.tar`, or a folder of `*.tar`, or `train/*.tar` + `test/*.tar`) whose members are
`[<split>/]<class>/<image>` or WebDataset samples `key.jpg` + `key.cls` (`shards.py`; their listings are cached
between starts, `shard_cache.py`). What is held in memory is an index: (shard, byte offset, byte size, label,
name) per image, 36 bytes + the name; pixels exist only for the batches in flight. The index is sorted by
(class, name) exactly like `imagefolder.read_imagefolder`, so image i of the streamed path is image i of the
in-memory path, decoded by the same code (`decode.decode_images`).

Why not the webdataset library's reader (its shard format is read here): it reads shards front to back through
a shuffle buffer, so the order is not a permutation drawn from (seed, epoch) and a run cannot continue mid-epoch
without replaying the epoch. Reading tar members at their byte offsets gives both: the order is the project's
`SeededBatchSampler` (one permutation per (seed, epoch), strided across DDP ranks), and resuming skips the
served batches' indices.
Compressed archives (.tar.gz) cannot be read at an offset; unpack them once (`tar -xzf`) or repack as .tar.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from simclr.utils import usable_cores
from simclr.data.sampler import SeededBatchSampler
from simclr.data.decode import EncodedBatch, LazyNames, decode_images
from simclr.data.formats import IMAGE_EXTENSIONS, DataError, ImageData
from simclr.data.imagefolder import cache_dir, class_folders, split_folder, split_root
from simclr.data.shard_cache import shard_listings
from simclr.data.shards import scan_shard, shard_entries, split_shards
from simclr.data.splits import (check_compatible_splits, holdout_indices, per_class_indices, refuse_unused_holdout,
                                split_indices)


class StreamIndex:
    """Where each image's bytes are: in shard files[file_of[i]] at offset[i], size[i] bytes, or (file_of[i] = -1)
    the whole file root/name(i). Per image, tensors only (no Python object per image, so forked workers
    reading the index do not copy it page by page): 36 bytes + the name's UTF-8 bytes."""

    def __init__(self, root: str, files: list[str], entries: list[tuple[str | int, str, int, int, int]], source: str,
                 folders: set[str] = frozenset(), numbered: bool = False):
        # entries: (class, name within its tree or shard, shard number or -1, offset, size); folders: a tree's
        # class folders, empty ones included (as the in-memory reader: dropping one would shift later labels).
        # numbered (WebDataset .cls labels): the class is the label itself, and class i is named "i"
        if numbered:
            classes = tuple(str(i) for i in range(max((e[0] for e in entries), default=-1) + 1))
        else:
            classes = tuple(sorted({e[0] for e in entries} | set(folders)))
        if not classes:
            raise DataError(f"{source}: no images found; expected <class>/<image>{IMAGE_EXTENSIONS[0]} files, "
                            ".tar shards of them, or WebDataset shards (key.jpg + key.cls).")
        entries.sort(key=lambda e: (e[0], e[1]))
        label = (lambda c: c) if numbered else {c: i for i, c in enumerate(classes)}.__getitem__
        self.root, self.files, self.classes, self.numbered = root, tuple(files), classes, numbered
        encoded = [e[1].encode() for e in entries]
        self._name_bytes = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if encoded else None
        self._name_start = torch.tensor([0, *itertools.accumulate(len(n) for n in encoded)], dtype=torch.int64)
        self.file_of = torch.tensor([e[2] for e in entries], dtype=torch.int32)
        self.offset = torch.tensor([e[3] for e in entries], dtype=torch.int64)
        self.size = torch.tensor([e[4] for e in entries], dtype=torch.int64)
        self.labels = torch.tensor([label(e[0]) for e in entries], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def names(self, ids: list[int]) -> list[str]:
        """The images' member names (shards) or paths relative to root (trees)."""
        blob = memoryview(self._name_bytes.numpy()) if self._name_bytes is not None else memoryview(b"")
        start = self._name_start.numpy()
        return [str(blob[start[i]:start[i + 1]], "utf-8") for i in ids]

    def where(self, ids: list[int]) -> list[str]:
        """The images as error messages name them: shard.tar:member or the file's path."""
        return [f"{Path(self.files[f]).name}:{n}" if f >= 0 else os.path.join(self.root, n)
                for f, n in zip(self.file_of[ids].tolist(), self.names(ids))]


def index_images(path: str | Path, split: str | None = None, cache: Path | None = None) -> StreamIndex:
    """Index an ImageFolder tree or tar shards (`shards.py`: ImageFolder or WebDataset members) without reading
    any pixels. cache: the folder keeping shard listings between starts (`shard_cache.py`); None: scan."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist.")
    if path.name.endswith((".tar.gz", ".tgz", ".gz")):
        raise DataError(f"data.path: {path} is compressed and cannot be streamed (no reads at an offset); "
                        f"unpack it once (`tar -xzf {path.name}`) and point data.path at the folder, or repack "
                        "it as uncompressed .tar shards.")
    shards, split_named = split_shards(path, split)
    files, entries, numbered, folders = [], [], False, set()
    if shards:
        listings = shard_listings(path if path.is_file() else shards[0].parent, shards, cache, scan_shard)
        files, entries, numbered = shard_entries(path, shards, listings, None if split_named else split)
    root = path if shards else split_root(path, split)
    if not shards:
        folders = class_folders(path, split)
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for name in sorted(os.listdir(folder)):  # no Path object per image: trees may hold millions
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:  # as the in-memory reader
                    entries.append((folder.name, f"{folder.name}/{name}", -1, 0, -1))
    if split is not None and not entries:
        where = f"in the '{split}' shards" if numbered else f"under a '{split}/' folder"
        raise DataError(f"{path}: no images {where}; expected <...>/{split}/<class>/<image>, or WebDataset "
                        f"shards {split}/*.tar or {split}-*.tar of key.jpg + key.cls samples.")
    return StreamIndex(str(root), files, entries, str(path), folders, numbered)


def _read_file(path: str) -> bytes:
    """The whole file, with the fewest system calls (about half the CPU time of open().read() on small images)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        parts = [os.read(fd, size)]
        while sum(map(len, parts)) < size and parts[-1]:  # a short read (large files): go on
            parts.append(os.read(fd, size - sum(map(len, parts))))
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


class StreamedImages(Dataset):
    """dataset[batch of positions] -> (uint8 (B, 3, size, size), labels), decoded in the worker that asks, or
    with decode_in_worker=False an EncodedBatch (the files' bytes) for the module to decode on its device.
    Position p is image ids[p] of the index (all images when ids is None)."""

    def __init__(self, index: StreamIndex, image_size: int | None, ids: torch.Tensor | None = None,
                 decode_in_worker: bool = True):
        self.index, self.image_size, self.decode_in_worker = index, image_size, decode_in_worker
        self.ids = torch.arange(len(index)) if ids is None else ids
        self._handles: dict[int, object] = {}  # per worker process: open shards, reused

    def __len__(self) -> int:
        return len(self.ids)

    def _shard(self, f: int):
        if f not in self._handles:
            self._handles[f] = open(self.index.files[f], "rb")  # noqa: SIM115 - kept open for the worker's life
        return self._handles[f]

    def _read(self, ids: list[int]) -> list[bytes]:
        files, offsets, sizes = (t[ids].tolist() for t in (self.index.file_of, self.index.offset, self.index.size))
        blobs: list[bytes] = [b""] * len(files)
        paths = self.index.where(ids) if min(files) < 0 else None
        for k in sorted(range(len(files)), key=lambda k: (files[k], offsets[k])):  # each shard front to back
            if files[k] < 0:
                blobs[k] = _read_file(paths[k])
            else:
                fh = self._shard(files[k])
                fh.seek(offsets[k])
                blobs[k] = fh.read(sizes[k])
        return blobs

    def __getitem__(self, positions: torch.Tensor):
        ids = self.ids[positions].tolist()
        blobs, labels = self._read(ids), self.index.labels[ids]
        if self.decode_in_worker:
            names = LazyNames(lambda k: self.index.where([ids[k]])[0], len(ids))  # built only for a failure
            return decode_images(blobs, self.image_size, names), labels
        data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)  # one tensor: one shared-memory handover
        return EncodedBatch(data, torch.tensor([len(b) for b in blobs]), labels, self.index.where(ids))

    def __getstate__(self):  # open files do not travel to worker processes
        return {**self.__dict__, "_handles": {}}


def default_workers(devices_per_node: int = 1) -> int:
    """data.num_workers=null: one decode process per CPU core beyond the first of each device's share, at most 8.
    On 2 cores that is 1 worker next to torch's 2 intra-op threads: decoding is the smaller part of a step, so
    one worker keeps up, and taking a torch thread away would slow the model more than decoding slows it
    (scripts/bench_data.py, docs/scaling.md)."""
    return max(1, min(8, usable_cores() // max(1, devices_per_node) - 1))


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
                  pin_memory: bool = False, ids: torch.Tensor | None = None,
                  decode_in_worker: bool = True) -> StreamLoader:
    """decode_in_worker=False: batches are EncodedBatch, for `decode.decode_on_device` (data.decode_device=cuda);
    their bytes are never pinned (nvJPEG reads them from ordinary memory)."""
    dataset = StreamedImages(index, image_size, ids, decode_in_worker)
    sampler = SeededBatchSampler(len(dataset), batch_size, seed, shuffle, drop_last, rank, world)
    return StreamLoader(dataset, sampler, num_workers=num_workers, pin_memory=pin_memory and decode_in_worker)


def decode_subset(index: StreamIndex, image_size: int, ids: torch.Tensor, chunk: int = 1024) -> ImageData:
    """Images `ids` of the index decoded into one tensor, chunk by chunk (no second copy while stacking)."""
    images = torch.empty((len(ids), 3, image_size, image_size), dtype=torch.uint8)
    dataset = StreamedImages(index, image_size, ids)
    for start in range(0, len(ids), chunk):
        part = torch.arange(start, min(start + chunk, len(ids)))
        images[part] = dataset[part][0]
    return ImageData(images, index.labels[ids], index.classes)


def _without_pixels(index: StreamIndex, ids: torch.Tensor, size: int) -> ImageData:
    """Images `ids` of the index as ImageData for the split checks: labels and classes, one shared all-zero image
    (no memory)."""
    return ImageData(torch.zeros((1, 3, size, size), dtype=torch.uint8).expand(len(ids), -1, -1, -1),
                     index.labels[ids], index.classes)


def _share_numbered_classes(path: Path, train: StreamIndex, test: StreamIndex) -> None:
    """WebDataset splits name classes by number: both get classes 0..the largest label of either (a test split
    without the last class still means the same classes). A shard in both splits is refused (its name holds
    both split words), as testing on training images would overstate every score."""
    both = sorted(set(train.files) & set(test.files))
    if both:
        raise DataError(f"{path}: {Path(both[0]).name} is a shard of both the train and the test split (its name "
                        "holds both words); name each shard after one split.")
    train.classes = test.classes = max(train.classes, test.classes, key=len)


def stream_splits(cfg, seed: int) -> tuple[dict[str, ImageData], tuple[StreamIndex, torch.Tensor]]:
    """The streamed training set (index + ids), and in memory only what evaluation needs: "train" =
    data.stream_eval_per_class labelled images per class of it, "val" and "test" as with the in-memory path
    (a flat tree's test split held out of it by the same draw, so both paths train and test on the same images)."""
    path, cache = Path(cfg.path).expanduser(), cache_dir(cfg.cache_dir)
    train_folder = split_folder(path, cfg.train_split)
    test_folder = split_folder(path, cfg.test_split, required=cfg.test_split != "test")
    index = index_images(path, train_folder, cache)
    if train_folder is None:  # a flat tree: one index, the test split held out of it, the rest the training side
        pool, test_pool = holdout_indices(index.labels, index.classes, cfg.holdout_fraction, str(path))
        test_index = index
    else:
        refuse_unused_holdout(cfg, path)
        pool, test_index = torch.arange(len(index)), index_images(path, test_folder, cache)
        test_pool = torch.arange(len(test_index))
        if index.numbered and test_index.numbered:
            _share_numbered_classes(path, index, test_index)
    train_pos, val_pos = split_indices(index.labels[pool], cfg, seed)
    check_compatible_splits(cfg, _without_pixels(index, pool, cfg.image_size),
                            _without_pixels(test_index, test_pool, cfg.image_size), val_pos)
    train_ids, val_ids = pool[train_pos], pool[val_pos]
    if len(train_ids) < cfg.batch_size:
        raise DataError(f"data.batch_size={cfg.batch_size} exceeds the {len(train_ids)} training images; "
                        "lower data.batch_size or raise data.train_per_class.")
    bank = train_ids[per_class_indices(index.labels[train_ids], cfg.stream_eval_per_class, seed + 3)]
    test_ids = test_pool[per_class_indices(test_index.labels[test_pool], cfg.test_per_class, seed + 2)] \
        if cfg.test_per_class else test_pool
    splits = {"train": decode_subset(index, cfg.image_size, bank), "val": decode_subset(index, cfg.image_size, val_ids),
              "test": decode_subset(test_index, cfg.image_size, test_ids)}
    return splits, (index, train_ids)
