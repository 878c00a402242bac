"""The ablation protocol `selection`: every policy-search objective (`evaluate.proxies.selection_metrics`:
kNN on the validation split carved from train, RankMe, rotation prediction) computed on each arm x seed,
so label-free objectives can be checked against labelled ones across the arms of a study.

Each run's values are written to `runs/<arm>-seed<s>/selection.json` (never the test split; the final
encoder, `last.ckpt`, as in a search trial) and named in its `arm.json` record. `simclr ablate report`
then writes `selection.csv`: one row per arm x seed with the three objectives next to the test metrics.
"""
from __future__ import annotations

import csv
from pathlib import Path

from simclr.ablate.status import finished_records
from simclr.evaluate.proxies import OBJECTIVES, selection_metrics
from simclr.ablate.records import ACCURACIES, RERUN, check_fields, read_recorded, read_results
from simclr.utils import write_json_atomic

SELECTION = "selection"
SELECTION_FILE = "selection.json"


def score_run(run_dir: Path) -> dict:
    """The selection objectives of one finished run, written next to it (once: an existing file is reused,
    so resuming an ablation does not recompute or overwrite them)."""
    path = Path(run_dir) / SELECTION_FILE
    if path.is_file():
        return read_recorded(path, RERUN, OBJECTIVES)
    metrics = selection_metrics(run_dir)
    write_json_atomic(path, metrics)
    return metrics


def selection_rows(root: Path) -> list[dict]:
    """One row per finished arm x seed that has selection objectives: arm, seed, the objectives, and every
    test metric of the trained encoder (`protocol/metric`, e.g. `knn_k20/top1`)."""
    rows = []
    for entry in finished_records(root).values():
        path = Path(entry["run_dir"]) / SELECTION_FILE
        if not path.is_file():
            continue
        scores = read_recorded(path, RERUN, OBJECTIVES)
        check_fields(path, scores, dict.fromkeys(OBJECTIVES, (int, float, type(None))), RERUN)
        test = read_results(Path(entry["results"]))["metrics"].get("simclr", {})
        row = {"arm": entry["arm"], "seed": int(entry["seed"]), **{k: scores[k] for k in OBJECTIVES}}
        for protocol, metrics in test.items():
            row.update({f"{protocol}/{m}": v for m, v in metrics.items() if m in ACCURACIES})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["arm"], r["seed"]))


def write_selection_table(root: Path, rows: list[dict] | None = None) -> Path | None:
    """`selection.csv` in the ablation directory (`rows`: selection_rows(root), read earlier); None (and nothing
    written) when no run has objectives."""
    rows = selection_rows(root) if rows is None else rows
    if not rows:
        return None
    fields = list(dict.fromkeys(k for r in rows for k in r))
    out = Path(root) / "selection.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return out
