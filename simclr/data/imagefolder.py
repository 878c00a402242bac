"""ImageFolder trees and .tar(.gz) archives of them: decoded once into uint8 tensors and cached.

The cache key digests every image file's size and modification time, so a replaced or truncated file
is read again, never served stale.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import torch

from simclr.data.decode import DECODER_VERSION, decode_images
from simclr.data.formats import IMAGE_EXTENSIONS, DataError, ImageData, _need
from simclr.utils import torch_save_atomic

def _decode(blobs: list[bytes], size: int | None, where: list[str]) -> torch.Tensor:
    """The whole dataset, decoded into one preallocated tensor chunk by chunk (no second copy while stacking)."""
    chunk = 1024
    first = decode_images(blobs[:chunk], size, where[:chunk])
    out = torch.empty((len(blobs), *first.shape[1:]), dtype=torch.uint8)
    out[:len(first)] = first
    starts = range(chunk, len(blobs), chunk)
    if len(blobs) > 2000:  # a one-off decode (then cached): show progress
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="decoding images (cached afterwards)", unit="chunk", leave=False)
    for i in starts:
        part = decode_images(blobs[i:i + chunk], size, where[i:i + chunk])
        if part.shape[1:] != first.shape[1:]:
            raise DataError(f"images have different sizes ({tuple(first.shape[2:])} and {tuple(part.shape[2:])}, "
                            f"e.g. {where[i]}); set data.image_size to resize them.")
        out[i:i + len(part)] = part
    return out


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


def split_folder(path: Path, split: str, required: bool = False) -> str | None:
    """The folder that holds `split`: archives and .tar shards always carry one; a tree is either split
    (train/<class>/..., test/<class>/..., or train/*.tar, test/*.tar) or flat (<class>/<image>: None, and the
    caller holds the test split out of it, splits.holdout_indices). A split tree without this split is refused:
    read whole, its split folders would silently become classes."""
    if path.is_file() or any(path.glob("*.tar")) or (path / split).is_dir():
        return split
    splits = sorted(e.name for e in os.scandir(path) if e.is_dir() and any(
        c.is_dir() or c.name.endswith(".tar") for c in os.scandir(e.path)))
    if splits:
        raise DataError(f"{path}: no '{split}/' folder; the tree's split folders are {splits}. Set "
                        "data.test_split (ImageNet's test split is 'val') or data.train_split to the right one.")
    if required:  # a flat tree has no folder of that name to test on
        raise DataError(f"{path}: no '{split}/' folder (the tree is <class>/<image>, without split folders); "
                        f"data.test_split={split} names a folder that does not exist.")
    return None


def split_root(path: Path, split: str | None) -> Path:
    return path / split if split is not None and (path / split).is_dir() else path


def class_folders(path: Path, split: str | None) -> set[str]:
    if path.is_file():
        return set()
    return {p.name for p in split_root(path, split).iterdir() if p.is_dir() and not p.name.startswith(".")}


def _tree_digest(path: Path, split: str | None) -> str:
    """Size + mtime of every file under the tree: replacing or truncating one image changes the cache key."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}|{st.st_mtime_ns}"
    h = hashlib.sha256()
    root = split_root(path, split)
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        h.update(f"{folder}/".encode())
        for name in sorted(files):
            st = os.stat(os.path.join(folder, name))
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _from_dir(path: Path, split: str | None) -> list[tuple[str, str, bytes]]:
    root = split_root(path, split)
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
        root = split_root(path, split)
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
    key = hashlib.sha256(f"{path.resolve()}|{_tree_digest(path, split)}|{split}|{size}|{DECODER_VERSION}".encode()).hexdigest()[:20]
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
        shards = path.is_dir() and (any(path.glob("*.tar")) or any(split_root(path, split).glob("*.tar")))
        raise DataError(f"{path}: no images under a '{split}/' folder; expected <...>/{split}/<class>/<image>" +
                        ("; a folder of .tar shards is read by data.loader=stream." if shards else "."))
    blobs, labels, classes, names = _labelled(entries, str(path), class_folders(path, split))
    data = ImageData(_decode(blobs, size, names), torch.tensor(labels, dtype=torch.int64), classes)
    cache.mkdir(parents=True, exist_ok=True)
    torch_save_atomic({"images": data.images, "labels": data.labels, "classes": list(classes)}, cached)
    return data
