"""Shard listings kept between starts: scanning every tar header (and reading every .cls member) of an
ImageNet-sized dataset takes minutes at each start; what the scan yields is a few bytes per image.

One JSON file per shard source (a folder of shards, or one shard) in the cache folder (data.cache_dir,
$SIMCLR_CACHE or ~/.cache/simclr), named by a digest of the source's resolved path as the in-memory image cache
is: the data's own folder may be read-only or shared. A shard's listing is reused only while the shard's size,
mtime, ctime and inode are the ones it was scanned at. The image cache keys on size and mtime; ctime and the
inode also change when a shard is replaced by a rename or a copy that keeps the mtime (rsync -t), after which
stale offsets would read the wrong bytes. So a new or replaced shard is scanned, alone.

The cache file is an input too: a header line (format version, sha256 of the rest) and the listings as one JSON
line. One that fails either check (damaged, edited, written by another version) is rebuilt, never trusted.
Hashing the bytes as written, not the parsed listings re-serialised, keeps the check to a fraction of the parse
(an ImageNet-sized listing is about 50 MB).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from simclr.data.formats import DataError
from simclr.data.shards import EMPTY, FOLDERS, WEBDATASET
from simclr.utils import write_text_atomic

FORMAT = "simclr-shard-listing/1"
log = logging.getLogger("simclr")


def cache_file(cache: Path, source: Path) -> Path:
    key = hashlib.sha256(f"{source.resolve()}|{FORMAT}".encode()).hexdigest()[:20]
    return cache / f"shards-{key}.jsonl"


def _stamp(shard: Path) -> list[int]:
    try:
        st = shard.stat()
    except OSError as e:
        raise DataError(f"{shard}: cannot read ({e}).") from None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _well_formed(listing) -> bool:
    if not isinstance(listing, dict) or listing.get("layout") not in (WEBDATASET, FOLDERS, EMPTY):
        return False
    columns = [listing.get(k) for k in ("names", "offsets", "sizes", "labels")]
    if not all(isinstance(c, list) for c in columns):
        return False
    n = len(columns[0])
    return len(columns[1]) == len(columns[2]) == n and len(columns[3]) == (n if listing["layout"] == WEBDATASET else 0)


def _load(file: Path) -> dict:
    """The cached listings by shard name, or {} for a missing, damaged, edited or foreign file."""
    try:
        head, _, body = file.read_bytes().partition(b"\n")
        header = json.loads(head)
        if header["format"] == FORMAT and header["sha256"] == hashlib.sha256(body).hexdigest():
            listings = json.loads(body)
            if isinstance(listings, dict):
                return listings
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass
    log.warning("%s: the shard index cache is damaged or from another version; rebuilding it.", file)
    return {}


def shard_listings(source: Path, shards: list[Path], cache: Path | None, scan: Callable[[Path], dict]) -> list[dict]:
    """scan(shard) for each shard, from the cache where the shard is the one scanned (cache None: no cache)."""
    if cache is None:
        return [scan(s) for s in shards]
    file = cache_file(cache, source)
    cached = _load(file)
    listings, changed = [], set(cached) != {s.name for s in shards}
    for shard in shards:
        stamp, hit = _stamp(shard), cached.get(shard.name)
        if not (isinstance(hit, dict) and hit.get("stamp") == stamp and _well_formed(hit)):
            hit, changed = {**scan(shard), "stamp": stamp}, True
        listings.append(hit)
    if changed:
        body = json.dumps({s.name: listing for s, listing in zip(shards, listings)}, separators=(",", ":"))
        digest = hashlib.sha256(body.encode()).hexdigest()
        header = {"format": FORMAT, "source": str(source.resolve()), "sha256": digest}
        try:
            cache.mkdir(parents=True, exist_ok=True)
            write_text_atomic(file, f"{json.dumps(header)}\n{body}")
        except OSError as e:  # an unwritable cache folder costs the next start a scan, not this run
            log.warning("%s: cannot write the shard index cache (%s); the next start scans the shards again.",
                        file, e)
    return listings
