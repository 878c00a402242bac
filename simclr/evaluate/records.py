"""Result records: results.json (metrics + every setting behind them) and one CSV row per number.

Nothing is overwritten: each evaluation gets a fresh eval-N directory; CSV rows are appended.
"""
from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from simclr.config.schema import ConfigError

from simclr.utils import first_free

CSV_FIELDS = ["time", "eval_dir", "checkpoint_sha256", "dataset", "encoder", "protocol", "metric", "value"]


PER_IMAGE_ENCODING = "base64(numpy.packbits(top-1 correct per test image, in test-split order))"


def labels_digest(labels) -> str:
    """sha256 of the test labels in order (int64): two runs with the same digest and count saw the same labels in
    the same order, which is what pairing their per-image correctness needs."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels), dtype=np.int64).tobytes()).hexdigest()


def binomial_se(top1: float, n: int) -> float:
    """Standard error of a top-1 accuracy measured on n test images: sqrt(p(1-p)/n)."""
    return math.sqrt(top1 * (1 - top1) / n) if n else math.nan


def per_image_record(correct: dict[str, dict[str, np.ndarray]], test_labels) -> dict:
    """{encoder: {protocol: (n,) bool}} -> results.json's `per_image` (n/8 bytes a metric before base64)."""
    return {"images": int(len(test_labels)), "labels_sha256": labels_digest(test_labels),
            "encoding": PER_IMAGE_ENCODING,
            "encoders": {enc: {proto: base64.b64encode(np.packbits(np.asarray(c, dtype=bool))).decode("ascii")
                               for proto, c in protos.items()} for enc, protos in correct.items()}}


def decode_per_image(per_image) -> dict[str, dict[str, np.ndarray]]:
    """results.json's `per_image` -> {encoder: {protocol: (n,) bool}}; a ValueError naming the damaged field."""
    if not isinstance(per_image, dict):
        raise ValueError("per_image is not an object")
    n, digest = per_image.get("images"), per_image.get("labels_sha256")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"per_image.images is {n!r}, not a positive image count")
    if not isinstance(digest, str):
        raise ValueError(f"per_image.labels_sha256 is {digest!r}, not a hash")
    encoders = per_image.get("encoders")
    if not isinstance(encoders, dict) or not all(isinstance(v, dict) for v in encoders.values()):
        raise ValueError("per_image.encoders is not {encoder: {protocol: base64}}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for enc, protos in encoders.items():
        for proto, text in protos.items():
            try:
                packed = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
            except (TypeError, ValueError, binascii.Error):
                packed = None
            if packed is None or len(packed) != (n + 7) // 8:
                raise ValueError(f"per_image.encoders.{enc}.{proto} is not {n} packed bits in base64")
            out.setdefault(enc, {})[proto] = np.unpackbits(packed, count=n).astype(bool)
    return out


def new_eval_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = first_free(lambda n: root / f"eval-{n}")
    path.mkdir()
    return path


def flatten(metrics: dict) -> list[tuple[str, str, str, float]]:
    """{encoder: {protocol: {metric: value}}} -> rows (encoder, protocol, metric, value)."""
    rows = []
    for encoder, protocols in metrics.items():
        for protocol, values in protocols.items():
            for metric, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append((encoder, protocol, metric, float(value)))
    return rows


def check_csv(csv_path: Path) -> None:
    """The results.csv an evaluation appends to must be simclr's own: a regular file in its folder (not a link that
    would write elsewhere) whose header is CSV_FIELDS. Checked before any evaluation work."""
    if csv_path.is_symlink() or (csv_path.exists() and not csv_path.is_file()):
        raise ConfigError(f"{csv_path}: is a link or not a file; evaluations append their rows to a results.csv of "
                          "the run's own. Move it aside and evaluate again (a new one is written).")
    if csv_path.exists():
        with open(csv_path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != CSV_FIELDS:
            raise ConfigError(f"{csv_path}: its header is {header} but simclr writes {CSV_FIELDS}; rows appended "
                              "under it would be misread. Move it aside and evaluate again (a new one is written).")


def write_records(eval_dir: Path, csv_path: Path, metrics: dict, settings: dict, per_image: dict | None = None) -> Path:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = {"time": stamp, "metrics": metrics, "settings": settings}
    if per_image:
        record["per_image"] = per_image
    out = eval_dir / "results.json"
    out.write_text(json.dumps(record, indent=2, default=str))
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(CSV_FIELDS)
        for encoder, protocol, metric, value in flatten(metrics):
            writer.writerow([stamp, str(eval_dir), settings["checkpoint"]["sha256"], settings["data"]["name"],
                             encoder, protocol, metric, f"{value:.6g}"])
    return out


def format_table(metrics: dict, trained: str = "simclr") -> str:
    """A plain-text table: rows = encoders, columns = protocol/metric. `trained`: the row label of the trained
    encoder (its method's name; results.json keeps the key "simclr" for it whatever the method)."""
    cols = sorted({(p, m) for protos in metrics.values() for p, vals in protos.items() for m in vals
                   if isinstance(vals[m], (int, float)) and not isinstance(vals[m], bool) and m != "k"})
    names = [f"{p}/{m}" for p, m in cols]
    widths = [max(10, len(n)) + 2 for n in names]
    head = f"{'encoder':14s}" + "".join(f"{n:>{w}s}" for n, w in zip(names, widths))
    lines = [head, "-" * len(head)]
    for enc, protos in metrics.items():
        cells = []
        for (p, m), w in zip(cols, widths):
            v = protos.get(p, {}).get(m)
            cells.append(f"{v:>{w}.4f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}")
        lines.append(f"{trained if enc == 'simclr' else enc:14s}" + "".join(cells))
    return "\n".join(lines)
