"""Result records: results.json (metrics + every setting behind them) and one CSV row per number.

Nothing is overwritten: each evaluation gets a fresh eval-N directory; CSV rows are appended.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from simclr.utils import first_free

CSV_FIELDS = ["time", "eval_dir", "checkpoint_sha256", "dataset", "encoder", "protocol", "metric", "value"]


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


def write_records(eval_dir: Path, csv_path: Path, metrics: dict, settings: dict) -> Path:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    record = {"time": stamp, "metrics": metrics, "settings": settings}
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


def format_table(metrics: dict) -> str:
    """A plain-text table: rows = encoders, columns = protocol/metric."""
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
        lines.append(f"{enc:14s}" + "".join(cells))
    return "\n".join(lines)
