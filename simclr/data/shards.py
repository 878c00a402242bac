"""Tar shards for the streamed loader: which shards hold a split, and what each one holds.

Two member layouts, one per dataset:
* ImageFolder members `[<split>/]<class>/<image>`: the class is the member's folder, sorted by name as
  `imagefolder.read_imagefolder` sorts class folders.
* WebDataset samples `key.<image ext>` + `key.cls` (the class number as ASCII text, as WebDataset writers store
  it; `key` is the member name up to the first dot of its file name). Other members of a sample (`key.json`,
  `key.txt`, ...) are ignored. Class i is named "i", so label i is the number in the .cls.

Where a split's shards are: `<data.path>/<split>/*.tar` (the folder names the split; any layout), else the
`*.tar` in data.path itself: ImageFolder shards name the split in their members, WebDataset shards in their
file name, as WebDataset users name them (`train-000000.tar`, `imagenet-val-000012.tar`: the split as a word
between `-`, `_` or `.`).
"""
from __future__ import annotations

import posixpath
import re
import tarfile
from pathlib import Path

from simclr.data.formats import IMAGE_EXTENSIONS, DataError

WEBDATASET, FOLDERS, EMPTY = "webdataset", "folders", "empty"
MAX_LABEL = 999_999  # a .cls beyond this is an id or a hash, not a class number (and would size a huge class list)
_CLASS_NUMBER = re.compile(rb"\s*(-?[0-9]+)\s*")


def split_shards(path: Path, split: str | None) -> tuple[list[Path], bool]:
    """The shards that may hold `split`, and whether their folder alone says they do (`<path>/<split>/*.tar`)."""
    if path.is_file():
        return [path], False
    if split is not None and (path / split).is_dir():
        inside = sorted((path / split).glob("*.tar"))
        if inside:
            return inside, True
    return sorted(path.glob("*.tar")), False


def _sample_key(member: str) -> tuple[str, str]:
    """WebDataset's split of a member name: (key, extension), the extension from the file name's first dot."""
    folder, base = posixpath.split(member)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def _class_number(shard: Path, member: str, raw: bytes) -> int:
    found = _CLASS_NUMBER.fullmatch(raw)
    if found is None:
        raise DataError(f"{shard}:{member}: {raw[:20]!r} is not a class number; a WebDataset .cls member holds "
                        "one integer as text (b'3').")
    label = int(found.group(1))
    if not 0 <= label <= MAX_LABEL:
        raise DataError(f"{shard}:{member}: label {label} is out of range; class numbers are 0 to {MAX_LABEL}.")
    return label


def _webdataset_samples(shard: Path, images: list[tuple[str, int, int]], labels: dict[str, tuple[str, bytes]]
                        ) -> dict:
    names, offsets, sizes, numbers, seen = [], [], [], [], {}
    for name, offset, size in images:
        key, ext = _sample_key(name)
        if "." + ext not in IMAGE_EXTENSIONS:  # e.g. key.seg.png: another field of the sample, not its image
            continue
        if key in seen:
            raise DataError(f"{shard}: sample {key} has two images ({seen[key]}, {name}); a WebDataset sample "
                            "holds one image per key.")
        if key not in labels:
            raise DataError(f"{shard}:{name}: no {key}.cls next to it; in a WebDataset shard every image needs "
                            "key.cls with its class number (a shard that mixes them with <class>/<image> members "
                            "is refused too).")
        seen[key] = name
        names.append(name)
        offsets.append(offset)
        sizes.append(size)
        numbers.append(_class_number(shard, *labels[key]))
    for key, (member, _) in labels.items():
        if key not in seen:
            raise DataError(f"{shard}:{member}: a label without an image; expected {key}.jpg (or "
                            f"{', '.join(IMAGE_EXTENSIONS[1:])}) in the same shard.")
    return {"layout": WEBDATASET, "names": names, "offsets": offsets, "sizes": sizes, "labels": numbers}


def scan_shard(shard: Path) -> dict:
    """Every image member of one shard: {"layout", "names", "offsets", "sizes", "labels" (WebDataset only)}.
    Headers only, plus each .cls member's few bytes; no pixels."""
    images, labels = [], {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = _sample_key(m.name)
                if ext == "cls":  # key.<other>.cls is another field of the sample, as WebDataset reads it
                    # read while iterating: tarfile seeks back to the next header itself
                    raw = tar.extractfile(m).read(64)
                    raw = raw if m.size <= 64 else raw[:20] + b"..."  # no class number is that long
                    labels[key] = (m.name, raw)
                elif m.name.lower().endswith(IMAGE_EXTENSIONS):
                    images.append((m.name, m.offset_data, m.size))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{shard}: cannot read as an uncompressed tar shard ({e}).") from None
    if labels:
        return _webdataset_samples(shard, images, labels)
    for name, _, _ in images:
        if len(Path(name).parts) < 2:  # silently dropped, a WebDataset shard without labels would go unnoticed
            key = _sample_key(name)[0]
            raise DataError(f"{shard}:{name}: an image outside any <class>/ folder and without a {key}.cls label; "
                            "expected members <split>/<class>/<image> or WebDataset samples key.jpg + key.cls.")
    return {"layout": FOLDERS if images else EMPTY, "names": [n for n, _, _ in images],
            "offsets": [o for _, o, _ in images], "sizes": [s for _, _, s in images], "labels": []}


def _names_split(shard: Path, split: str) -> bool:
    return re.search(rf"(^|[-_.]){re.escape(split)}([-_.]|$)", shard.name.removesuffix(".tar")) is not None


def shard_entries(path: Path, shards: list[Path], listings: list[dict], split: str | None
                  ) -> tuple[list[str], list[tuple], bool]:
    """(shard files, StreamIndex entries (class, name, shard number, offset, size), numbered): the images of
    `split` (None: all of them). numbered: WebDataset labels, the class being the label itself."""
    layouts = {listing["layout"]: shard for shard, listing in zip(shards, listings)}
    layouts.pop(EMPTY, None)
    if len(layouts) > 1:
        raise DataError(f"{path}: mixed shard layouts: {layouts[WEBDATASET].name} holds WebDataset samples "
                        f"(key.jpg + key.cls), {layouts[FOLDERS].name} holds <split>/<class>/<image> members; "
                        "give one dataset one layout.")
    if WEBDATASET not in layouts:
        entries = []
        for f, listing in enumerate(listings):
            for name, offset, size in zip(listing["names"], listing["offsets"], listing["sizes"]):
                parts = Path(name).parts
                if split is None or (len(parts) >= 3 and parts[-3] == split):
                    entries.append((parts[-2], name, f, offset, size))
        return [str(s) for s in shards], entries, False
    if split is not None:
        picked = [k for k, shard in enumerate(shards) if _names_split(shard, split)]
        if not picked:
            raise DataError(f"{path}: no WebDataset shards of split '{split}': expected {path / split}/*.tar, or "
                            f"shard names with '{split}' as a word ({split}-000000.tar); found "
                            f"{', '.join(s.name for s in shards[:3])}{', ...' if len(shards) > 3 else ''}. "
                            "data.train_split and data.test_split name the splits (ImageNet's test split is 'val').")
        shards, listings = [shards[k] for k in picked], [listings[k] for k in picked]
    entries = [(label, name, f, offset, size) for f, listing in enumerate(listings)
               for name, offset, size, label in zip(listing["names"], listing["offsets"], listing["sizes"],
                                                    listing["labels"])]
    return [str(s) for s in shards], entries, True
