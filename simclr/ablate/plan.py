"""`simclr ablate plan SPEC`: how small an effect a study can see, how many seeds a target effect needs, and
what the study costs, before it runs.

    simclr ablate plan configs/ablations/cifar_fig5.yaml --pilot results/cifar_fig5 --mde 2
    simclr ablate plan SPEC --pilot-seeds 3      # no earlier study: runs a pilot first (reference + one arm)

The spread of per-seed paired differences (arm - reference) in a pilot sets the precision of every paired
comparison; power.mde turns it into the smallest true difference the planned seeds detect, and
power.seeds_needed into the seeds an effect of --mde points needs. A pilot this command runs is an ablation
of its own in <output_dir>/<name>-pilot, resumable like one, with the full spec's training settings (so its
noise and its time per run are the study's).
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

from simclr.ablate.interaction import reference_for
from simclr.ablate.power import ALPHA, POWER, mde, pooled_sd, seeds_needed
from simclr.ablate.records import RERUN, read_optional
from simclr.ablate.report import collect, reference_of
from simclr.ablate.arms import generate_arms
from simclr.ablate.pilot import methods_not_piloted, pilot_arms, run_pilot, settings_differ
from simclr.ablate.spec import load_spec
from simclr.ablate.stats import paired, test_sampling
from simclr.ablate.status import finished_entries
from simclr.config.schema import ConfigError
from simclr.runs.layout import record_path
from simclr.utils import format_duration, write_json_atomic

PILOT_SEEDS = 3


def _check_options(mde_points: float | None, seeds: int | None, pilot_seeds: int | None) -> None:
    if mde_points is not None and not (math.isfinite(mde_points) and 0 < mde_points < 100):
        raise ConfigError(f"--mde: {mde_points} is out of range; give the effect to detect in accuracy points, "
                          "a number in (0, 100) (e.g. 2 for two points).")
    for name, value in (("--seeds", seeds), ("--pilot-seeds", pilot_seeds)):
        if value is not None and value < 2:
            raise ConfigError(f"{name}: {value} is out of range; give an integer >= 2 (a paired t-test needs the "
                              "spread of at least two per-seed differences).")


def _when(text) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def run_seconds(entry: dict) -> tuple[float, str] | None:
    """How long one finished run took, and what that span covers; None where its files do not say."""
    job = entry.get("job")
    if isinstance(job, dict) and all(isinstance(job.get(k), (int, float)) and math.isfinite(job[k])
                                     for k in ("started", "ended")) and job["ended"] >= job["started"]:
        return job["ended"] - job["started"], "arm.json job started -> ended (training + evaluation)"
    run = read_optional(record_path(entry["run_dir"]), RERUN) or {} if entry.get("run_dir") else {}
    started = _when(run.get("started"))
    evaluated = _when((read_optional(Path(entry["results"]), RERUN) or {}).get("time"))
    if started is not None and evaluated is not None and evaluated >= started:
        return evaluated - started, "run.json started -> eval results.json time (training + evaluation)"
    finished = _when(run.get("finished"))
    if started is not None and finished is not None and finished >= started:
        return finished - started, "run.json started -> finished (training only, evaluation not timed)"
    return None


def comparisons(values: dict, reference: str, n_planned: int, mde_points: float | None,
                correct: dict | None = None, info: dict | None = None) -> list[dict]:
    """Per arm vs reference and accuracy metric: the pilot's paired sd (points), the MDE at n_planned seeds
    (also at the sd's 80 % upper confidence bound: a few pilot seeds estimate it loosely), the seeds --mde needs
    and the test floor (the smallest effect detectable against the shared test set's sampling error, which no
    seed count lowers; where the pilot recorded per-image results); then one pooled row per metric."""
    correct = correct or {}
    rows = []
    metrics = sorted({m for arm in values.values() for m in arm})
    for metric in metrics:
        pooled = []
        for arm in values:
            ref = reference_for(arm, reference, info or {})  # with a method axis: arm's own method's reference
            p = None if arm == ref or ref not in values else paired(values[arm].get(metric, {}),
                                                                    values[ref].get(metric, {}))
            if p is None or p["seeds"] < 2:
                continue
            pooled.append((100 * p["std"], p["seeds"]))
            test = test_sampling(correct.get(arm, {}).get(metric, {}), correct.get(ref, {}).get(metric, {}), p)
            rows.append({**_row(f"{arm} vs {ref}", metric, 100 * p["std"], p["seeds"], n_planned, mde_points,
                                p["seeds"] - 1),
                         "test_floor_points": None if test is None else 100 * test["floor"]})
        if len(pooled) > 1:
            sd, dof = pooled_sd(pooled)
            # the comparisons share the reference's values, so this is a typical spread, not an independent one
            rows.append({**_row(f"pooled ({len(pooled)} comparisons)", metric, sd, None, n_planned, mde_points, dof),
                         "pooled_df": dof, "test_floor_points": None})
    return rows


def sd_upper(sd: float, df: int, level: float = 0.8) -> float:
    """One-sided `level` upper confidence bound of a standard deviation estimated with df degrees of freedom
    (chi-square): with df = 2 it is 2.2x the estimate."""
    from scipy.stats import chi2
    return sd * math.sqrt(df / chi2.ppf(1 - level, df))


def _row(name: str, metric: str, sd: float, n: int | None, n_planned: int, mde_points: float | None,
         df: int) -> dict:
    upper = sd_upper(sd, df)
    return {"comparison": name, "metric": metric, "pilot_seeds": n, "sd_points": sd, "sd_upper80_points": upper,
            "mde_points": mde(sd, n_planned) if n_planned >= 2 else None,
            "mde_upper80_points": mde(upper, n_planned) if n_planned >= 2 else None,
            "seeds_needed": seeds_needed(sd, mde_points) if mde_points else None}


def plan(spec_path: str | Path, pilot: str | Path | None = None, mde_points: float | None = None,
         seeds: int | None = None, pilot_seeds: int | None = None, pilot_arm: str | None = None) -> dict:
    """Print (and return) the plan; runs a pilot first when `pilot` is None. Everything is checked before
    anything trains or is written."""
    _check_options(mde_points, seeds, pilot_seeds)
    if pilot is not None and pilot_seeds is not None:
        raise ConfigError("--pilot-seeds: sizes the pilot this command runs; with --pilot the earlier study's "
                          "seeds are used. Drop one of them.")
    if pilot is not None and pilot_arm is not None:
        raise ConfigError("--pilot-arm: chooses an arm of the pilot this command runs; with --pilot the earlier "
                          "study's arms are used. Drop one of them.")
    spec = load_spec(spec_path)
    arms = generate_arms(spec)
    n_planned = seeds or len(spec.seeds)
    if n_planned < 2:
        raise ConfigError(f"seeds: {spec_path} plans {n_planned} seed; a paired t-test needs at least 2 — give "
                          "--seeds N to plan for N.")
    if pilot is None and not set(spec.protocols) & {"knn", "linear"}:
        raise ConfigError(f"protocols: {list(spec.protocols)} give no accuracies to plan from; a pilot needs knn or "
                          "linear (diagnostics and selection alone have no paired accuracy).")
    if pilot is not None:
        root = Path(pilot)
        if not root.is_dir():
            raise ConfigError(f"--pilot: {root} is not a folder; give an earlier study's directory (output_dir/name, "
                              "e.g. results/cifar_fig5), or leave --pilot out to run a pilot.")
        if not finished_entries(root):
            raise ConfigError(f"--pilot: {root} holds no finished runs (runs/*/arm.json); give a study directory "
                              "with finished runs, or leave --pilot out to run a pilot.")
    else:
        pilot_arms(spec, arms, pilot_arm)  # refused now, not after the pilot trained
        root = run_pilot(spec, arms, Path(spec_path), pilot_seeds or PILOT_SEEDS, pilot_arm)
    values, info, _, correct = collect(root)
    if not any(values.values()):
        raise ConfigError(f"--pilot: {root} holds no kNN or linear accuracies (its protocols were diagnostics or "
                          "selection only); the plan needs accuracies per seed.")
    reference = reference_of(root, values, info)
    rows = comparisons(values, reference, n_planned, mde_points, correct, info)
    if not rows:
        raise ConfigError(f"--pilot: {root} has no arm sharing two or more seeds with its reference '{reference}'; "
                          "the spread of paired differences needs at least two.")
    entries = finished_entries(root)
    timed = [(*t, _with_floors(e)) for e, t in zip(entries, map(run_seconds, entries)) if t is not None]
    result = {"spec": str(spec_path), "pilot": str(root), "reference": reference, "alpha": ALPHA, "power": POWER,
              "planned_seeds": n_planned, "mde_target_points": mde_points, "rows": rows,
              "compute": _compute(len(arms), n_planned, timed, _threads(entries)),
              "settings_differ": settings_differ(spec, entries) if pilot is not None else [],
              "methods_not_piloted": methods_not_piloted(spec, info, entries)}
    print("\n".join(_lines(result)))
    if pilot is None:  # the pilot folder is this command's own
        write_json_atomic(root / "plan_power.json", result)
        print(f"wrote {root / 'plan_power.json'}")
    return result


def _with_floors(entry: dict) -> bool:
    """Whether this run also evaluated the floors (random init, raw pixels): one arm per seed does, and it
    takes longer."""
    record = read_optional(Path(entry["results"]), RERUN) or {}
    return "raw_pixels" in (record.get("metrics") or {})


def _threads(entries: list[dict]) -> list[int]:
    """The torch threads the pilot's runs trained with (run.json's cpu record), for the compute line."""
    found = set()
    for entry in entries:
        run = (read_optional(record_path(entry["run_dir"]), RERUN) or {}) if entry.get("run_dir") else {}
        threads = (run.get("cpu") or {}).get("torch_threads") if isinstance(run.get("cpu"), dict) else None
        if isinstance(threads, int):
            found.add(threads)
    return sorted(found)


def _compute(n_arms: int, n_seeds: int, timed: list[tuple[float, str, bool]], threads: list[int]) -> dict:
    """Runs x the pilot's median time per run; where the pilot timed runs with and without the floors
    separately, one run per seed with floors and the rest without."""
    plain = [s for s, _, floors in timed if not floors]
    with_floors = [s for s, _, floors in timed if floors]
    if plain and with_floors:
        total = n_seeds * (statistics.median(with_floors) + (n_arms - 1) * statistics.median(plain))
        per_run = total / (n_arms * n_seeds)
    else:
        per_run = statistics.median(s for s, _, _ in timed) if timed else None
        total = None if per_run is None else per_run * n_arms * n_seeds
    return {"arms": n_arms, "seeds": n_seeds, "runs": n_arms * n_seeds, "seconds_per_run": per_run,
            "seconds_per_run_with_floors": statistics.median(with_floors) if with_floors else None,
            "seconds_per_run_without_floors": statistics.median(plain) if plain else None,
            "runs_timed": len(timed), "torch_threads": threads,
            "measured": [how for how, _ in Counter(h for _, h, _ in timed).most_common()], "seconds_total": total}


def _lines(r: dict) -> list[str]:
    n, target = r["planned_seeds"], r["mde_target_points"]
    lines = [f"pilot {r['pilot']}: paired differences vs '{r['reference']}'; plan for {r['spec']} at {n} seeds",
             f"MDE: smallest true mean difference a two-sided paired t-test (alpha {r['alpha']}) detects with "
             f"{r['power']:.0%} power; sd: of the pilot's per-seed differences (sd+: its 80 % upper confidence "
             "bound, since few seeds estimate it loosely); test floor: what the shared test set's sampling error "
             "lets no seed count go below; accuracy points", ""]
    if r.get("settings_differ"):
        lines += [f"note: the pilot trained with other settings than the spec ({'; '.join(r['settings_differ'][:6])}"
                  + ("; ..." if len(r["settings_differ"]) > 6 else "") + "): its spread and time per run are of "
                  "that scale", ""]
    if r.get("methods_not_piloted"):
        lines += [f"note: no pilot run of {', '.join(r['methods_not_piloted'])}: their spreads and time per run are "
                  "assumed to be the piloted method's, and a method x policy interaction (a difference of two drops) "
                  "spreads more than either drop; pilot with --pilot <a finished study with every method>", ""]
    cols = [("comparison", max(len(row["comparison"]) for row in r["rows"])),
            ("metric", max(len(row["metric"]) for row in r["rows"])), ("seeds", 5), ("sd (pts)", 8),
            (f"MDE @ {n} seeds", 0), (f"MDE @ {n} (sd+)", 0), ("test floor", 0)]
    if target:
        cols.append((f"seeds for {target:g} pts", 0))
    widths = [max(w, len(name)) for name, w in cols]
    lines.append("  ".join(f"{name:{w}s}" if i < 2 else f"{name:>{w}s}" for i, ((name, _), w) in
                           enumerate(zip(cols, widths))))
    fmt = lambda x: "n/a (< 2)" if x is None else f"{x:.1f}"  # noqa: E731
    for row in r["rows"]:
        cells = [row["comparison"], row["metric"],
                 f"df {row['pooled_df']}" if row["pilot_seeds"] is None else str(row["pilot_seeds"]),
                 f"{row['sd_points']:.2f}", fmt(row["mde_points"]), fmt(row["mde_upper80_points"]),
                 "–" if row["test_floor_points"] is None else f"{row['test_floor_points']:.1f}"]
        if target:  # below the test floor no number of seeds suffices: more test images would
            floor = row["test_floor_points"]
            cells.append("none (floor)" if floor is not None and floor > target else
                         str(row["seeds_needed"]) if row["seeds_needed"] is not None else "> 1e6")
        lines.append("  ".join(f"{c:{w}s}" if i < 2 else f"{c:>{w}s}" for i, (c, w) in enumerate(zip(cells, widths))))
    c = r["compute"]
    threads = f" of {'/'.join(map(str, c['torch_threads']))} thread(s)" if c["torch_threads"] else ""
    if c["seconds_per_run"] is None:
        lines += ["", f"compute: {c['arms']} arms x {c['seeds']} seeds = {c['runs']} runs; the pilot's files do not "
                      "say how long its runs took"]
    else:
        split = (f" (a run that also evaluates the floors, one per seed: "
                 f"{format_duration(c['seconds_per_run_with_floors'])}; the others: "
                 f"{format_duration(c['seconds_per_run_without_floors'])})"
                 if c["seconds_per_run_with_floors"] and c["seconds_per_run_without_floors"] else "")
        lines += ["", f"compute: {c['arms']} arms x {c['seeds']} seeds = {c['runs']} runs x "
                      f"{format_duration(c['seconds_per_run'])} per run{split} = {format_duration(c['seconds_total'])} "
                      f"on one worker{threads} (from {c['runs_timed']} pilot runs; measured: {'; '.join(c['measured'])})"]
    return lines
