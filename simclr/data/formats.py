"""Readers for the on-disk formats users already have. Each returns uint8 (N, C, H, W) + labels.

No augmentation here: data are held in memory as uint8 and augmented on the model's device.
Every reader fails with `DataError` naming the path and the layout it expected.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
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


# ---------------------------------------------------------------- ImageFolder trees and archives

def _decode(blobs: list[bytes], size: int | None, where: list[str]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    out = []
    items = zip(blobs, where, strict=True)
    if len(blobs) > 2000:  # a one-off decode (then cached): show progress
        from tqdm.auto import tqdm
        items = tqdm(items, total=len(blobs), desc="decoding images (cached afterwards)", unit="img", leave=False)
    for blob, name in items:
        try:
            img = Image.open(io.BytesIO(blob)).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{name}: not a readable image ({e}).") from None
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img))
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}...; set data.image_size to resize them.")
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _labelled(entries: list[tuple[str, str, bytes]], source: str, folders: set[str] = frozenset()
              ) -> tuple[list[bytes], list[int], tuple[str, ...], list[str]]:
    # an empty class folder still names a class: dropping it would shift every later label
    classes = tuple(sorted({c for c, _, _ in entries} | set(folders)))
    if not entries:
        raise DataError(f"{source}: no images found; expected <class>/<image>{IMAGE_EXTENSIONS[0]} files.")
    index = {c: i for i, c in enumerate(classes)}
    entries = sorted(entries, key=lambda e: (e[0], e[1]))
    return [b for _, _, b in entries], [index[c] for c, _, _ in entries], classes, [n for _, n, _ in entries]


def _from_tar(path: Path, split: str | None) -> list[tuple[str, str, bytes]]:
    entries = []
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                parts = Path(m.name).parts
                if not m.isfile() or not m.name.lower().endswith(IMAGE_EXTENSIONS) or len(parts) < 2:
                    continue
                if split is not None and (len(parts) < 3 or parts[-3] != split):
                    continue
                entries.append((parts[-2], m.name, tar.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read archive ({e}).") from None
    return entries


def _split_root(path: Path, split: str | None) -> Path:
    return path / split if split is not None and (path / split).is_dir() else path


def _class_folders(path: Path, split: str | None) -> set[str]:
    if path.is_file():
        return set()
    return {p.name for p in _split_root(path, split).iterdir() if p.is_dir() and not p.name.startswith(".")}


def _tree_digest(path: Path, split: str | None) -> str:
    """Size + mtime of every file under the tree: replacing or truncating one image changes the cache key."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}|{st.st_mtime_ns}"
    h = hashlib.sha256()
    root = _split_root(path, split)
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        h.update(f"{folder}/".encode())
        for name in sorted(files):
            st = os.stat(os.path.join(folder, name))
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _from_dir(path: Path, split: str | None) -> list[tuple[str, str, bytes]]:
    root = _split_root(path, split)
    entries = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                entries.append((cls.name, str(f), f.read_bytes()))
    return entries


def cache_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get("SIMCLR_CACHE") or Path.home() / ".cache" / "simclr")


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (None off Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_fits_in_memory(path: Path, split: str | None, size: int | None) -> None:
    """The in-memory path holds every encoded file and then every decoded image: refuse, with the way out,
    what would not fit, instead of being killed by the kernel half-way through."""
    avail = available_memory()
    if avail is None or size is None:
        return
    if path.is_file():
        try:
            with tarfile.open(path) as tar:  # headers only (a .tar.gz is decompressed once, nothing kept)
                sizes = [m.size for m in tar if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS) and
                         (split is None or Path(m.name).parts[-3:-2] == (split,))]
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{path}: cannot read archive ({e}).") from None
    else:
        root = path / split if split is not None and (path / split).is_dir() else path
        sizes = [f.stat().st_size for f in root.glob("*/*") if f.suffix.lower() in IMAGE_EXTENSIONS]
    need = sum(sizes) + len(sizes) * 3 * size * size
    if need > 0.8 * avail:
        raise DataError(f"data.loader: memory would hold {len(sizes)} images of {path} ({need / 2**30:.1f} GiB "
                        f"encoded + decoded at {size}px), more than the {avail / 2**30:.1f} GiB available; set "
                        "data.loader=stream to decode them batch by batch from an ImageFolder tree or .tar shards.")


def read_imagefolder(path: Path, split: str | None, size: int | None, cache: Path) -> ImageData:
    """An ImageFolder tree (dir or .tar/.tar.gz), optionally with train/ and test/ splits.

    Decoded once, then cached as a uint8 tensor file keyed by path + split + size + the size and mtime of
    every file in the tree (of the archive itself for a .tar.gz).
    """
    _need(path, "an ImageFolder tree (<class>/<image>) or a .tar.gz of one")
    key = hashlib.sha256(f"{path.resolve()}|{_tree_digest(path, split)}|{split}|{size}".encode()).hexdigest()[:20]
    cached = cache / f"imagefolder-{key}.pt"
    if cached.exists():
        try:
            blob = torch.load(cached, weights_only=True)
            return ImageData(blob["images"], blob["labels"], tuple(blob["classes"]))
        except Exception:  # a corrupt cache is rebuilt, never trusted
            cached.unlink(missing_ok=True)
    _check_fits_in_memory(path, split, size)
    entries = _from_tar(path, split) if path.is_file() else _from_dir(path, split)
    if split is not None and not entries:
        raise DataError(f"{path}: no images under a '{split}/' folder; expected <...>/{split}/<class>/<image>.")
    blobs, labels, classes, names = _labelled(entries, str(path), _class_folders(path, split))
    data = ImageData(_decode(blobs, size, names), torch.tensor(labels, dtype=torch.int64), classes)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    torch.save({"images": data.images, "labels": data.labels, "classes": list(classes)}, tmp)
    tmp.replace(cached)
    return data
