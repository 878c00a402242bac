"""Readers for the on-disk formats users already have. Each returns uint8 (N, C, H, W) + labels.

No augmentation here: data are held in memory as uint8 and augmented on the model's device.
Every reader fails with `DataError` naming the path and the layout it expected.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


class DataError(ValueError):
    """A dataset path is missing or not in the expected format. The message names the path."""


@dataclass(frozen=True)
class ImageData:
    images: torch.Tensor          # (N, C, H, W) uint8
    labels: torch.Tensor          # (N,) int64; -1 for unlabeled
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageData":
        return ImageData(self.images[index], self.labels[index], self.classes)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: not found; expected {what}.")
    return path


def is_cifar_pickle(root: Path) -> bool:
    """torchvision's python release of CIFAR at `root` (else a cifar10/cifar100 path is an ImageFolder tree)."""
    return any((root / d).is_dir() for d in ("cifar-10-batches-py", "cifar-100-python")) or \
        (root / "data_batch_1").exists() or (root / "train").is_file()


def read_cifar_pickle(root: Path, split: str, cifar100: bool) -> ImageData:
    """torchvision's python-pickle release: cifar-10-batches-py/ or cifar-100-python/."""
    sub = "cifar-100-python" if cifar100 else "cifar-10-batches-py"
    folder = root / sub if (root / sub).is_dir() else root
    if cifar100:
        files = ["train"] if split == "train" else ["test"]
        meta, key, label_key = "meta", "fine_label_names", "fine_labels"
    else:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, key, label_key = "batches.meta", "label_names", "labels"
    what = f"the CIFAR python release ({sub}/ with {', '.join(files)} and {meta})"
    images, labels = [], []
    for name in files:
        try:
            with open(_need(folder / name, what), "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(batch[label_key])
        except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
            raise DataError(f"{folder / name}: not a valid CIFAR pickle batch ({e}); expected {what}.") from None
    with open(_need(folder / meta, what), "rb") as fh:
        classes = tuple(pickle.load(fh, encoding="latin1")[key])
    return ImageData(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64), classes)


def _read_idx_array(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file ({data.size} bytes of data, header says {list(dims)}).")
    return data.reshape(dims)


def read_idx(root: Path, split: str) -> ImageData:
    """(Fashion-)MNIST IDX files, gzipped or not: train-images-idx3-ubyte[.gz] etc."""
    prefix = "train" if split == "train" else "t10k"
    found, paths = {}, {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        options = [root / f"{prefix}-{kind}{ext}" for ext in (".gz", "")]
        hit = [p for p in options if p.exists()]
        if not hit:
            raise DataError(f"{options[0]}: not found; expected IDX files {prefix}-images-idx3-ubyte[.gz] and "
                            f"{prefix}-labels-idx1-ubyte[.gz] in {root} (e.g. /usr/share/datasets/fashion-mnist).")
        found[kind], paths[kind] = _read_idx_array(hit[0]), hit[0]
    images = torch.from_numpy(found["images-idx3-ubyte"].copy()).unsqueeze(1)
    labels = torch.from_numpy(found["labels-idx1-ubyte"].astype(np.int64))
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot") if "fashion" in str(root).lower() else tuple(str(i) for i in range(10))
    if images.ndim != 4 or labels.ndim != 1:
        raise DataError(f"{paths['images-idx3-ubyte']}, {paths['labels-idx1-ubyte']}: expected 3-d images and "
                        f"1-d labels, got {list(found['images-idx3-ubyte'].shape)} and "
                        f"{list(found['labels-idx1-ubyte'].shape)}.")
    if len(images) != len(labels):
        raise DataError(f"{paths['images-idx3-ubyte']} has {len(images)} images but {paths['labels-idx1-ubyte']} "
                        f"has {len(labels)} labels; the two files must come from the same release.")
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if len(bad):
        raise DataError(f"{paths['labels-idx1-ubyte']}: label {int(bad[0])} is out of range; valid labels are "
                        f"0..{len(classes) - 1} ({len(bad)} bad).")
    return ImageData(images, labels, classes)


def read_stl10(root: Path, split: str) -> ImageData:
    """STL-10 binary release: stl10_binary/{train,test,unlabeled}_X.bin (+ _y.bin)."""
    folder = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
    what = "the STL-10 binary release (stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, unlabeled_X.bin)"
    x = np.fromfile(_need(folder / f"{split}_X.bin", what), dtype=np.uint8)
    if x.size % (3 * 96 * 96):
        raise DataError(f"{folder / f'{split}_X.bin'}: size {x.size} is not a multiple of 3*96*96; truncated?")
    images = torch.from_numpy(x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())  # stored column-major
    if split == "unlabeled":
        labels = torch.full((len(images),), -1, dtype=torch.int64)
    else:
        labels = torch.from_numpy(np.fromfile(_need(folder / f"{split}_y.bin", what), dtype=np.uint8).astype(np.int64) - 1)
    names = folder / "class_names.txt"
    classes = tuple(names.read_text().split()) if names.exists() else tuple(str(i) for i in range(10))
    return ImageData(images, labels, classes)


def read_digits(split: str) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images), a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]   # (N, 1, 8, 8)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.2, stratify=d.target, random_state=0)
    idx = idx_train if split == "train" else idx_test
    return ImageData(torch.from_numpy(images[idx]), torch.from_numpy(d.target[idx].astype(np.int64)),
                     tuple(str(i) for i in range(10)))
