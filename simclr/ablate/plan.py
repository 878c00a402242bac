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

import dataclasses
import math
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

from simclr.ablate.launch import launch_tasks
from simclr.ablate.power import ALPHA, POWER, mde, pooled_sd, seeds_needed
from simclr.ablate.records import RERUN, read_optional
from simclr.ablate.report import collect, reference_of
from simclr.ablate.runner import ablation_dir, make_tasks
from simclr.ablate.spec import AblationSpec, Arm, generate_arms, load_spec, reference_arm
from simclr.ablate.stats import paired
from simclr.ablate.status import finished_entries
from simclr.config.schema import ConfigError, suggest
from simclr.utils import format_duration, write_json_atomic

PILOT_SEEDS = 3


def _check_options(mde_points: float | None, seeds: int | None, pilot_seeds: int | None) -> None:
    if mde_points is not None and not (math.isfinite(mde_points) and mde_points > 0):
        raise ConfigError(f"--mde: {mde_points} is out of range; give the effect to detect in accuracy points, "
                          "a number > 0 (e.g. 2 for two points).")
    for name, value in (("--seeds", seeds), ("--pilot-seeds", pilot_seeds)):
        if value is not None and value < 2:
            raise ConfigError(f"{name}: {value} is out of range; give an integer >= 2 (a paired t-test needs the "
                              "spread of at least two per-seed differences).")


def pilot_arms(spec: AblationSpec, arms: list[Arm], other: str | None = None) -> list[Arm]:
    """The reference arm and `other` (default: the first other arm in the spec's order; its first arm
    evaluates the floors)."""
    ref = reference_arm(spec, arms)
    others = [arm.name for arm in arms if arm.name != ref]
    if not others:
        raise ConfigError(f"arms: the spec has one arm ('{ref}'); paired comparisons, and so a plan, need two.")
    if other is not None and other not in others:
        raise ConfigError(f"--pilot-arm: '{other}' is not an arm of {spec.name} other than its reference "
                          f"'{ref}'.{suggest(other, others)}")
    return [arm for arm in arms if arm.name in (ref, other or others[0])]


def run_pilot(spec: AblationSpec, arms: list[Arm], spec_path: Path, n_seeds: int, other: str | None = None) -> Path:
    """Train and evaluate the pilot arms on n_seeds seeds (the spec's first, then the smallest unused ones)
    into <output_dir>/<name>-pilot; finished runs there are kept, so a rerun only adds what is missing."""
    chosen = pilot_arms(spec, arms, other)
    seeds = [*spec.seeds, *(s for s in range(len(spec.seeds) + n_seeds) if s not in spec.seeds)][:n_seeds]
    pilot = dataclasses.replace(spec, name=f"{spec.name}-pilot", seeds=tuple(seeds),
                                reference=reference_arm(spec, arms))
    root = ablation_dir(pilot)
    print(f"pilot: arms {', '.join(a.name for a in chosen)} x seeds {seeds} -> {root}", flush=True)
    launch_tasks(pilot, chosen, root, make_tasks(pilot, chosen, root), spec_path,
                 f"simclr ablate plan {spec_path} --pilot-seeds {n_seeds}")
    return root


def _when(text) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def run_seconds(entry: dict) -> tuple[float, str] | None:
    """How long one finished run took, and what that span covers; None where its files do not say."""
    job = entry.get("job")
    if isinstance(job, dict) and all(isinstance(job.get(k), (int, float)) for k in ("started", "ended")):
        return job["ended"] - job["started"], "arm.json job started -> ended (training + evaluation)"
    run = read_optional(Path(entry["run_dir"]) / "run.json", RERUN) or {}
    started = _when(run.get("started"))
    evaluated = _when((read_optional(Path(entry["results"]), RERUN) or {}).get("time"))
    if started is not None and evaluated is not None and evaluated >= started:
        return evaluated - started, "run.json started -> eval results.json time (training + evaluation)"
    finished = _when(run.get("finished"))
    if started is not None and finished is not None and finished >= started:
        return finished - started, "run.json started -> finished (training only, evaluation not timed)"
    return None


def comparisons(values: dict, reference: str, n_planned: int, mde_points: float | None) -> list[dict]:
    """Per arm vs reference and accuracy metric: the pilot's paired sd (points), the MDE at n_planned seeds
    and the seeds --mde needs; then one pooled row per metric."""
    rows = []
    metrics = sorted({m for arm in values.values() for m in arm})
    for metric in metrics:
        pooled = []
        for arm in values:
            p = None if arm == reference else paired(values[arm].get(metric, {}), values[reference].get(metric, {}))
            if p is None or p["seeds"] < 2:
                continue
            pooled.append((100 * p["std"], p["seeds"]))
            rows.append(_row(f"{arm} vs {reference}", metric, 100 * p["std"], p["seeds"], n_planned, mde_points))
        if len(pooled) > 1:
            sd, dof = pooled_sd(pooled)
            # the comparisons share the reference's values, so this is a typical spread, not an independent one
            rows.append({**_row(f"pooled ({len(pooled)} comparisons)", metric, sd, None, n_planned, mde_points),
                         "pooled_df": dof})
    return rows


def _row(name: str, metric: str, sd: float, n: int | None, n_planned: int, mde_points: float | None) -> dict:
    return {"comparison": name, "metric": metric, "pilot_seeds": n, "sd_points": sd,
            "mde_points": mde(sd, n_planned) if n_planned >= 2 else None,
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
    values, info, _, _ = collect(root)
    if not any(values.values()):
        raise ConfigError(f"--pilot: {root} holds no kNN or linear accuracies (its protocols were diagnostics or "
                          "selection only); the plan needs accuracies per seed.")
    reference = reference_of(root, values, info)
    n_planned = seeds or len(spec.seeds)
    rows = comparisons(values, reference, n_planned, mde_points)
    if not rows:
        raise ConfigError(f"--pilot: {root} has no arm sharing two or more seeds with its reference '{reference}'; "
                          "the spread of paired differences needs at least two.")
    timed = [t for t in map(run_seconds, finished_entries(root)) if t is not None]
    result = {"spec": str(spec_path), "pilot": str(root), "reference": reference, "alpha": ALPHA, "power": POWER,
              "planned_seeds": n_planned, "mde_target_points": mde_points, "rows": rows,
              "compute": _compute(len(arms), n_planned, timed)}
    print("\n".join(_lines(result)))
    if pilot is None:  # the pilot folder is this command's own
        write_json_atomic(root / "plan_power.json", result)
        print(f"wrote {root / 'plan_power.json'}")
    return result


def _compute(n_arms: int, n_seeds: int, timed: list[tuple[float, str]]) -> dict:
    per_run = statistics.median(s for s, _ in timed) if timed else None
    return {"arms": n_arms, "seeds": n_seeds, "runs": n_arms * n_seeds, "seconds_per_run": per_run,
            "runs_timed": len(timed), "measured": [how for how, _ in Counter(h for _, h in timed).most_common()],
            "seconds_total": None if per_run is None else per_run * n_arms * n_seeds}


def _lines(r: dict) -> list[str]:
    n, target = r["planned_seeds"], r["mde_target_points"]
    lines = [f"pilot {r['pilot']}: paired differences vs '{r['reference']}'; plan for {r['spec']} at {n} seeds",
             f"MDE: smallest true mean difference a two-sided paired t-test (alpha {r['alpha']}) detects with "
             f"{r['power']:.0%} power; sd: of the pilot's per-seed differences; accuracy points", ""]
    width = max(len(row["comparison"]) for row in r["rows"])
    mwidth = max(len(row["metric"]) for row in r["rows"])
    head = f"{'comparison':{width}s}  {'metric':{mwidth}s}  seeds  sd (pts)  MDE @ {n} seeds"
    lines += [head + (f"  seeds for {target:g} pts" if target else "")]
    for row in r["rows"]:
        needed = row["seeds_needed"]
        mde_text = "n/a (< 2)" if row["mde_points"] is None else f"{row['mde_points']:.1f}"
        seeds = f"df {row['pooled_df']}" if row["pilot_seeds"] is None else str(row["pilot_seeds"])
        lines.append(f"{row['comparison']:{width}s}  {row['metric']:{mwidth}s}  {seeds:>5s}  "
                     f"{row['sd_points']:8.2f}  {mde_text:>{len(f'MDE @ {n} seeds')}s}"
                     + (f"  {needed if needed is not None else '> 1e6':>{len(f'seeds for {target:g} pts')}}"
                        if target else ""))
    c = r["compute"]
    if c["seconds_per_run"] is None:
        lines += ["", f"compute: {c['arms']} arms x {c['seeds']} seeds = {c['runs']} runs; the pilot's files do not "
                      "say how long its runs took"]
    else:
        lines += ["", f"compute: {c['arms']} arms x {c['seeds']} seeds = {c['runs']} runs x "
                      f"{format_duration(c['seconds_per_run'])} per run = {format_duration(c['seconds_total'])} on one "
                      f"worker (median of {c['runs_timed']} pilot runs; measured: {'; '.join(c['measured'])})"]
    return lines
