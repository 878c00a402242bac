"""`simclr ablate report DIR`: tables and plots rebuilt from each run's own record (runs/*/arm.json) alone."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from simclr.ablate.interaction import interaction_lines, interaction_rows, methods_in, reference_for
from simclr.ablate.report_plots import plot_bars, plot_methods, plot_paired, plot_pairwise, plot_sweep
from simclr.ablate.selection import selection_rows, write_selection_table
from simclr.ablate.power import MDE_NOTE, verdict
from simclr.ablate.stats import describe, describe_test, paired, summary, test_sampling
from simclr.ablate.records import ACCURACIES, read_manifest, read_plan, read_results
from simclr.ablate.status import RECORD, finished_entries, finished_records, planned_runs
from simclr.config.schema import ConfigError, suggest


def collect(root: Path) -> tuple[dict, dict, dict, dict]:
    """-> (values[arm][metric][seed] = value, arm info, baselines[encoder][metric][seed] = value,
    correct[arm][metric][seed] = (test labels' sha256, per-image top-1 correct) where runs recorded it)."""
    entries = finished_entries(root)
    lacking = [e for e in entries if "method" not in e["meta"]]
    if lacking and len(lacking) < len(entries):  # a method axis covers every arm; a run without one was edited
        e = lacking[0]
        raise ConfigError(f"{Path(e['run_dir']) / RECORD}: no meta.method, "
                          "while other arms of this study run on a method axis; restore it, or move that run's "
                          "folder out of the study's runs/ folder and relaunch the study to run it again.")
    values: dict = defaultdict(lambda: defaultdict(dict))
    baselines: dict = defaultdict(lambda: defaultdict(dict))
    correct: dict = defaultdict(lambda: defaultdict(dict))
    info: dict = {}
    for entry in entries:
        record = read_results(Path(entry["results"]))
        info[entry["arm"]] = {"kind": entry["kind"], "meta": entry["meta"]}
        for encoder, protocols in record["metrics"].items():
            target = values[entry["arm"]] if encoder == "simclr" else baselines[encoder]
            for protocol, metrics in protocols.items():
                for metric, v in metrics.items():
                    if metric in ACCURACIES:  # numbers: read_results checked them
                        target[f"{protocol}/{metric}"][int(entry["seed"])] = float(v)
        for protocol, hits in record.get("correct", {}).get("simclr", {}).items():
            correct[entry["arm"]][f"{protocol}/top1"][int(entry["seed"])] = (record["per_image"]["labels_sha256"], hits)
    return values, info, baselines, correct


def reference_of(root: Path, values: dict, info: dict) -> str:
    """The spec's reference arm (plan.json; manifest.json for older directories), else base, else pair-crop,
    else the first arm."""
    recorded = [index.get("reference") for index in (read_plan(root) or read_manifest(root),) if index]
    for candidate in (*recorded, "base", "pair-crop"):
        if candidate in values:
            return candidate
    return next(iter(values))


def main_metric(values: dict) -> str:
    keys = sorted({k for arm in values.values() for k in arm})
    for preferred in ("linear/top1",):
        if preferred in keys:
            return preferred
    knn = [k for k in keys if k.startswith("knn_") and k.endswith("/top1")]
    return knn[0] if knn else keys[0]


def table_rows(values: dict, info: dict, baselines: dict, reference: str, correct: dict | None = None) -> list[dict]:
    """One row per (arm or floor, metric): mean ± std over seeds, per-seed values, and the paired
    differences against the reference arm (with their test-sampling error where `correct` has the runs'
    per-image records) and against the random-init floor."""
    correct = correct or {}
    metrics = sorted({k for arm in values.values() for k in arm})
    floors = {name: baselines.get(name, {}) for name in ("random_init", "random_init_bn")}
    rows = []
    for arm, per_metric in [*values.items(), *((f"[{b}]", m) for b, m in baselines.items())]:
        ref = reference_for(arm, reference, info)  # with a method axis, the reference arm of arm's own method
        for metric in metrics:
            if metric not in per_metric:
                continue
            row = {"arm": arm, "kind": info.get(arm, {}).get("kind", "baseline"), "metric": metric,
                   **summary(per_metric[metric]), "reference": ref,
                   "vs_reference": None if arm == ref or ref not in values else paired(per_metric[metric],
                                                                                     values[ref].get(metric, {})),
                   **{f"vs_{name}": None if arm == f"[{name}]" or metric not in floor
                      else paired(per_metric[metric], floor[metric]) for name, floor in floors.items()}}
            row["vs_reference_test"] = test_sampling(correct.get(arm, {}).get(metric, {}),
                                                     correct.get(ref, {}).get(metric, {}), row["vs_reference"])
            if row["vs_reference"] is not None:  # the seeds share one test set: its sampling error bounds the verdict
                row["vs_reference"]["verdict"] = verdict(row["vs_reference"], row["vs_reference_test"])
            rows.append(row)
    return rows


def _flat(p: dict | None, prefix: str) -> dict:
    keys = ("mean", "std", "ci_low", "ci_high", "same_sign", "seeds", "mde", "verdict")
    return {f"{prefix}_{k}": ("" if p is None or p[k] is None else p[k]) for k in keys}


def _test_lines(rows: list[dict], reference: str) -> list[str]:
    """Markdown: each arm's paired difference vs the reference beside its test-sampling error."""
    lines = ["## Test sampling vs seed variance (points)", "",
             "Test-sampling ±1.96·SE: the paired SE of the mean difference over the same test images, "
             "sd_i(mean_s d_s,i)/√n with d_s,i = c_arm,s,i − c_ref,s,i (docs/evaluation.md): the seeds share the "
             "test images, so this error is not in their spread and more seeds do not shrink it; test floor: the "
             "smallest effect detectable against it (80 % power); var_test/var_seed: the part of the seed-to-seed "
             "variance of the differences that test sampling explains (its seed x image part). "
             "– where runs have no per-image records.", "",
             "| arm | metric | Δ vs reference [95 % t-interval] | test-sampling ±1.96·SE | test floor | "
             "var_test / var_seed |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['metric']} | {describe(r['vs_reference'])} | "
              + " | ".join(describe_test(r["vs_reference_test"])) + " |"
              for r in rows if r["arm"] != r["reference"] and r["kind"] != "baseline" and r["metric"].endswith("/top1")]
    return lines


def write_tables(root: Path, values: dict, info: dict, baselines: dict, reference: str | None = None,
                 suffix: str = "", correct: dict | None = None) -> list[str]:
    reference = reference or reference_of(root, values, info)
    metrics = sorted({k for arm in values.values() for k in arm})
    rows = table_rows(values, info, baselines, reference, correct)
    methods = methods_in(values, info)
    interaction = interaction_rows(values, info, reference, correct) if len(methods) > 1 else []
    done, planned = len(finished_records(root)), planned_runs(root)
    flat = [{"arm": r["arm"], "kind": r["kind"], "metric": r["metric"], "mean": r["mean"], "std": r["std"],
             "seeds": r["seeds"], "values": json.dumps(r["values"]), **_flat(r["vs_reference"], "d_ref"),
             **_flat(r["vs_random_init"], "d_rand"), **_flat(r["vs_random_init_bn"], "d_rand_bn"),
             **{f"d_ref_test_{k}": ("" if r["vs_reference_test"] is None else r["vs_reference_test"][k])
                for k in ("se", "floor", "share")}} for r in rows]
    with open(root / f"results{suffix}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]) if flat else ["arm"])
        w.writeheader()
        w.writerows(flat)
    (root / f"results{suffix}.json").write_text(json.dumps({
        "reference": reference, "ci_level": 0.95, "runs_finished": done, "runs_planned": planned,
        "paired": "per-seed differences (arm - reference, arm - random_init, arm - random_init_bn) over the "
                  "seeds both have; "
                  "ci = Student t interval of the mean difference; same_sign = seeds agreeing with the mean's sign; "
                  + MDE_NOTE,
        "test_sampling": "vs_reference_test: paired SE of the mean difference arm - reference from test sampling, "
                         "sd_i(mean_s d_s,i)/sqrt(n_images) with d_s,i = c_arm,s,i - c_ref,s,i over the same test "
                         "images; share = mean_s SE_s^2 / var of the per-seed differences; null without per-image "
                         "records",
        "rows": rows, **({"methods": methods, "interaction": interaction} if methods else {})}, indent=2))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    by = {(r["arm"], r["metric"]): r for r in rows}
    cell = {k: f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for k, r in by.items()}
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    refs = {r["reference"] for r in rows}
    lines += [f"| {a}{' (ref)' if a in refs else ''} | " + " | ".join(cell.get((a, m), "–") for m in metrics)
              + " |" for a in arms]
    seeds = max((r["seeds"] for r in rows), default=0)
    main = main_metric(values)
    ref_name = f"{reference.split('@')[0]}@<its method>" if methods else reference
    paired_lines = ["| arm | " + " | ".join(f"Δ {m} vs {ref_name}" for m in metrics)
                    + f" | Δ {main} vs random init | Δ {main} vs random init (BN recomputed) | verdict ({main}) |",
                    "|---" * (len(metrics) + 4) + "|"]
    paired_lines += [f"| {a} | " + " | ".join(describe(by[(a, m)]["vs_reference"]) if (a, m) in by else "–"
                                               for m in metrics)
                     + "".join(f" | {describe(by[(a, main)][key]) if (a, main) in by else '–'}"
                               for key in ("vs_random_init", "vs_random_init_bn"))
                     + f" | {by[(a, main)]['vs_reference']['verdict'] if (a, main) in by and by[(a, main)]['vs_reference'] else '–'} |"
                     for a in arms if a not in refs]
    partial = [f"**Partial: {done} of {planned} runs have finished**; `simclr ablate status {root}` lists the "
               "others. Means and intervals below cover the finished runs only.", ""] if done < planned else []
    md = [f"# Ablation results: {root.name}", "", *partial,
          f"Accuracy in %, mean ± sample std over {seeds} seed(s); `[random_init]` (untouched BN statistics), "
          "`[random_init_bn]` (BN statistics recomputed on training images) and `[raw_pixels]` are the floors.", "",
          *lines, "", f"## Paired differences vs `{ref_name}` (points)", "",
          "Per seed, arm − reference on the same splits and random streams; mean [95 % t-interval], and how "
          "many seeds agree in sign with the mean. " + MDE_NOTE, "", *paired_lines, "", *_test_lines(rows, reference),
          "", *interaction_lines(interaction, reference)]
    (root / f"results{suffix}.md").write_text("\n".join(md))
    return partial + lines + [""] + paired_lines + ([""] + interaction_lines(interaction, reference)[4:]
                                                    if interaction else [])


def report(root: Path, metric: str | None = None, reference: str | None = None) -> list[Path]:
    """Tables and plots; plots use `metric` (default: linear/top1, else the first kNN top-1). Paired
    differences are taken against `reference` (default: the spec's); a non-default reference writes
    results_vs_<arm>.* next to the default files instead of replacing them."""
    root = Path(root)
    if not finished_records(root) and not (root / "manifest.json").exists():
        raise ConfigError(f"{root}: no finished runs (runs/*/arm.json); is this an ablation directory "
                          "(output_dir/name)? `simclr ablate status DIR` shows where its runs stand.")
    values, info, baselines, correct = collect(root)
    selection_table = selection_rows(root)  # read (and checked) before anything is written
    if not any(values.values()):  # protocols: diagnostics and/or selection only
        if metric is not None or reference is not None:
            raise ConfigError(f"--{'metric' if metric is not None else 'reference'}: {root} holds no kNN or linear "
                              "accuracies to compare (its protocols were diagnostics/selection only).")
        selection = write_selection_table(root, selection_table)
        print(f"{root}: no kNN or linear accuracies to tabulate (the spec's protocols have none); each run's "
              "diagnostics are in runs/<key>/eval/*/results.json"
              + (f"; wrote {selection} (search objectives per run)" if selection else "."))
        return [selection] if selection else []
    if reference is not None and reference not in values:
        raise ConfigError(f"--reference: '{reference}' is not an arm of {root}.{suggest(reference, list(values))}")
    ref_suffix = "" if reference is None else "_vs_" + "".join(c if c.isalnum() or c in "-_." else "_"
                                                                for c in reference)
    known = sorted({k for arm in values.values() for k in arm})
    if metric is not None and metric not in known:  # checked before anything is written
        raise ConfigError(f"--metric: '{metric}' is not in these results.{suggest(metric, known)}")
    reference = reference or reference_of(root, values, info)
    lines = write_tables(root, values, info, baselines, reference, ref_suffix, correct)
    suffix = ("" if metric is None else "_" + metric.replace("/", "_")) + ref_suffix
    metric = metric or main_metric(values)
    made = [p for p in (plot_pairwise(root, values, info, metric, suffix, reference),
                        plot_bars(root, values, info, metric, baselines=baselines, suffix=suffix, reference=reference),
                        plot_sweep(root, values, info, metric, baselines=baselines, suffix=suffix),
                        plot_paired(root, values, baselines, metric, reference, suffix, info),
                        plot_methods(root, values, info, interaction_rows(values, info, reference, correct), metric,
                                     baselines, suffix, reference))
            if p is not None]
    selection = write_selection_table(root, selection_table)
    print("\n".join(lines) + (f"\nwrote {selection} (search objectives per run)" if selection else ""))
    print(f"wrote {root / f'results{ref_suffix}.csv'}, .md, .json" + "".join(f", {p.name}" for p in made))
    return made
