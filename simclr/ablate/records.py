"""Reading the JSON files an ablation directory holds. simclr writes each one atomically, so a file that does
not parse, or parses to the wrong shape, was edited or damaged (never caught half-written): it is refused with
one line naming it and what to do, instead of a traceback or a silently skipped result."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from simclr.config.methods import METHODS
from simclr.config.schema import ConfigError

RELAUNCH = "`simclr ablate SPEC` writes it afresh when it relaunches the study, leaving finished runs as they are."
RERUN = "restore it, or move that run's folder out of the study's runs/ folder and relaunch the study to run it again."
LEGACY_INDEX = ("in a study written before per-run records it is the only index of the finished runs: restore it "
                "from a backup (a relaunch would train them again).")
JOBS = "restore it, or move it aside: the arm then counts as never submitted."


def read_recorded(path: Path, fix: str, keys: tuple[str, ...] = ()) -> dict:
    """The JSON object in `path`, holding `keys`; else one ConfigError naming the file and `fix`."""
    try:
        obj = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not readable JSON ({e.msg}, line {e.lineno}); {fix}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not readable JSON (not UTF-8 text); {fix}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not readable JSON (nested too deeply); {fix}") from None
    except OSError as e:  # a directory, a symlink loop, no permission
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__}); {fix}") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        expected = f"a JSON object with {', '.join(keys)}" if keys else "a JSON object"
        raise ConfigError(f"{path}: not the file simclr writes there (expected {expected}); {fix}")
    return obj


def check_fields(path: Path, obj: dict, types: dict, fix: str, where: str = "") -> None:
    """Each `types` key of `obj` (when present) has its type: e.g. {"seed": int, "results": str}."""
    for key, kind in types.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = obj.get(key)
        if key in obj and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
                           or (isinstance(value, float) and not math.isfinite(value))):
            names = " or ".join("finite float" if k is float else k.__name__ for k in kinds)
            raise ConfigError(f"{path}: {where}{key} is {obj[key]!r}, not the {names} simclr writes there; {fix}")


RECORD_FIELDS = {"arm": str, "kind": str, "seed": int, "meta": dict, "results": str}  # arm.json, manifest entries
ATTEMPT_FIELDS = {"launcher": str, "job_id": (str, int), "stderr": str, "result": str, "error": str, "pid_start": int}


def read_optional(path: Path, fix: str, keys: tuple[str, ...] = ()) -> dict | None:
    """read_recorded, or None where there is no such file."""
    return read_recorded(path, fix, keys) if Path(path).is_file() else None


def read_plan(root: Path) -> dict | None:
    """plan.json (written by the launching command), None where there is none."""
    path = Path(root) / "plan.json"
    plan = read_optional(path, RELAUNCH, ("runs",))
    if plan is not None and not (isinstance(plan["runs"], list) and all(
            isinstance(run, dict) and isinstance(run.get("key"), str) for run in plan["runs"])):
        raise ConfigError(f"{path}: not an ablation plan (expected {{'runs': [{{'key': '<arm>-seed<s>', ...}}, "
                          f"...]}}); {RELAUNCH}")
    if plan is not None:
        check_fields(path, plan, {"reference": (str, type(None))}, RELAUNCH)
    return plan


def read_manifest(root: Path) -> dict | None:
    """manifest.json's finished runs (key -> record), None where there is no manifest."""
    path = Path(root) / "manifest.json"
    manifest = read_optional(path, LEGACY_INDEX, ("finished",))
    if manifest is None:
        return None
    if not (isinstance(manifest["finished"], dict) and all(
            isinstance(e, dict) and set(RECORD_FIELDS) <= set(e) for e in manifest["finished"].values())):
        raise ConfigError(f"{path}: not an ablation index (expected {{'finished': {{key: {{{', '.join(RECORD_FIELDS)}"
                          f"}}}}}}); {LEGACY_INDEX}")
    check_fields(path, manifest, {"reference": (str, type(None))}, LEGACY_INDEX)
    for key, entry in manifest["finished"].items():
        check_fields(path, entry, RECORD_FIELDS, LEGACY_INDEX, f"finished.{key}.")
    return manifest


def read_arm_record(path: Path) -> dict:
    """runs/<key>/arm.json: written by that arm's job when it has finished, after its results file, which it
    names relative to the run folder. Returns the record with `results` as a path."""
    record = read_recorded(path, RERUN, tuple(RECORD_FIELDS))
    check_fields(path, record, RECORD_FIELDS, RERUN)
    _check_method_meta(path, record)
    folder = Path(path).parent
    results = folder / record["results"]
    # compared as written, not resolved: an eval/ folder symlinked to another disk is still the run's own
    if not Path(os.path.normpath(results)).is_relative_to(os.path.normpath(folder)):
        raise ConfigError(f"{path}: results '{record['results']}' lies outside the run folder {folder}; {RERUN}")
    if not results.is_file():
        raise ConfigError(f"{path}: its results file {results} is missing (or not a file); {RERUN}")
    return {**record, "results": results}


def _check_method_meta(path: Path, record: dict) -> None:
    """An arm of a method axis is named <policy arm>@<method> and its meta says both: the report picks each arm's
    reference and interaction from the meta, so a meta that disagrees with the name would compare wrong runs."""
    arm, meta = record["arm"], record["meta"]
    if "method" not in meta:
        return  # whether the study has a method axis at all is checked over all its records (report.collect)
    method, policy = meta["method"], meta.get("policy_arm")
    if method not in METHODS:
        raise ConfigError(f"{path}: meta.method {method!r} is not a method (valid: {', '.join(METHODS)}); {RERUN}")
    if arm != f"{policy}@{method}":
        raise ConfigError(f"{path}: arm '{arm}' does not match its meta (policy_arm {policy!r}, method "
                          f"{method!r}: the arm would be '{policy}@{method}'); {RERUN}")


def check_job_id(path: Path, i: int, attempt: dict) -> None:
    """A local attempt's job id is the arm process's pid; a SLURM one is `<job>` or `<array job>_<task>`."""
    launcher, job = attempt.get("launcher"), str(attempt.get("job_id", ""))
    pattern = {"local": r"[0-9]{1,10}", "slurm": r"[0-9]{1,20}(_[0-9]{1,10})?"}.get(launcher)
    if launcher not in ("inline", "local", "slurm") or (pattern and not re.fullmatch(pattern, job)):
        raise ConfigError(f"{path}: attempts[{i}] is not a submission simclr writes (launcher inline, local with a "
                          f"process id, or slurm with a job id such as 123 or 123_4); {JOBS}")


ACCURACIES = ("top1", "top5")  # the metrics an ablation report tabulates


def read_results(path: Path) -> dict:
    """A run's results file (simclr evaluate's results.json): its `metrics` per encoder and protocol, each
    accuracy (ACCURACIES) a finite number, so a report can take them as they are and never drops one. Its
    optional `per_image` (absent before it was recorded) comes back decoded as `correct`:
    {encoder: {protocol: (n_test,) bool}}, with `per_image` itself as written."""
    record = read_recorded(path, RERUN, ("metrics",))
    metrics = record["metrics"]
    if not (isinstance(metrics, dict) and all(isinstance(protocols, dict) and all(
            isinstance(values, dict) for values in protocols.values()) for protocols in metrics.values())):
        raise ConfigError(f"{path}: not an evaluation record (expected 'metrics': {{encoder: {{protocol: ...}}}}); "
                          f"{RERUN}")
    for encoder, protocols in metrics.items():
        for protocol, values in protocols.items():
            check_fields(path, values, dict.fromkeys(ACCURACIES, (int, float)), RERUN, f"metrics.{encoder}.{protocol}.")
            for key in ACCURACIES:  # fractions: an edited 1.7 would be reported as 170 %
                if key in values and not 0 <= values[key] <= 1:
                    raise ConfigError(f"{path}: metrics.{encoder}.{protocol}.{key} is {values[key]}, not an accuracy "
                                      f"between 0 and 1; {RERUN}")
    if "per_image" in record:
        from simclr.evaluate.records import decode_per_image  # here: `ablate status` reads records without torch
        try:
            record["correct"] = decode_per_image(record["per_image"])
        except ValueError as e:
            raise ConfigError(f"{path}: {e}; {RERUN}") from None
        for encoder, protocols in record["correct"].items():
            for protocol, hits in protocols.items():
                top1 = metrics.get(encoder, {}).get(protocol, {}).get("top1")
                if top1 is not None and abs(float(hits.mean()) - top1) > 0.5 / len(hits):
                    raise ConfigError(f"{path}: per_image.encoders.{encoder}.{protocol} gets {hits.mean():.4f} of its "
                                      f"images right but metrics.{encoder}.{protocol}.top1 is {top1}: the two are from "
                                      f"different evaluations; {RERUN}")
    return record
