"""A search's outputs, rebuilt from the storage: trials.csv, best_policy.yaml, fANOVA importances,
history/importance PNGs, label-free vs kNN rank correlations, and the best-vs-base comparison on test
(simclr.search.final: an ordinary 2-arm ablation, >= 2 seeds, with per-seed paired differences)."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from simclr.augment import load_policy
from simclr.config.schema import ConfigError
from simclr.evaluate.proxies import LABEL_FREE, OBJECTIVES
from simclr.search.final import final_comparison
from simclr.search.spec import SearchSpec
from simclr.utils import pyplot


def spearman_ci(x, y) -> dict:
    """Spearman's rho with a 95 % interval from Fisher's z (se = sqrt(1.06 / (n - 3)), Fieller et al. 1957)."""
    from scipy.stats import spearmanr
    n = len(x)
    rho = float(spearmanr(x, y).statistic)
    if n <= 3 or not math.isfinite(rho):
        return {"rho": rho, "n": n, "ci95": None}
    z, se = math.atanh(max(min(rho, 0.999999), -0.999999)), math.sqrt(1.06 / (n - 3))
    return {"rho": rho, "n": n, "ci95": [math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)]}


def write_trials_csv(trials, path: Path) -> None:
    params = sorted({p for t in trials for p in t.params})
    attrs = [*OBJECTIVES, "seconds", "pruned_at_epoch", "retry_of", "run_dir", "policy_file"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["number", "state", "value", *params, *attrs])
        for t in trials:
            w.writerow([t.number, t.state.name, t.value, *(t.params.get(p) for p in params),
                        *(t.user_attrs.get(a) for a in attrs)])


def plot_history(trials, spec: SearchSpec, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, label=f"{spec.objective} (final)")
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   s=18, marker="x", color="grey", label="pruned (last kNN monitor value)")
    best, line = -math.inf, []
    for t in sorted(done, key=lambda t: t.number):
        best = max(best, t.value)
        line.append((t.number, best))
    if line:
        ax.step(*zip(*line), where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel=spec.objective, title=f"search {spec.name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def importances(study: optuna.Study, spec: SearchSpec, path_png: Path) -> dict | str:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return "needs at least 2 completed trials"
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=spec.seed))
    except (RuntimeError, ValueError) as e:
        return f"not computed: {e}"
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(imp) + 1.2))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set(xlabel="fANOVA importance (share of objective variance)", title=f"{spec.name}: {len(done)} trials")
    fig.tight_layout()
    fig.savefig(path_png, dpi=120)
    plt.close(fig)
    return {k: float(v) for k, v in imp.items()}


def write_best_policy(spec: SearchSpec, best: optuna.trial.FrozenTrial, root: Path) -> Path:
    policy = load_policy(best.user_attrs["policy_file"])
    raw = policy.to_dict() | {"name": f"{spec.name}-best",
                              "description": f"best of search {spec.name}: trial {best.number}, "
                                             f"{spec.objective}={best.value:.4f}; {policy.description}"}
    out = root / "best_policy.yaml"
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)
    stamp = root / ".best_policy.sha256"   # what simclr last wrote: a file that differs was edited by hand
    if out.is_file() and out.read_text() != text:
        written = stamp.read_text().strip() if stamp.is_file() else None
        if written != hashlib.sha256(out.read_bytes()).hexdigest():
            raise ConfigError(f"{out}: edited since simclr wrote it (or written by an older version); rewriting it "
                              "would lose the edit. Move it aside (e.g. to my_policy.yaml) and rerun.")
    out.write_text(text)
    stamp.write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    load_policy(out)  # the same check as `simclr policy check`
    return out


def write_outputs(spec: SearchSpec, study: optuna.Study, root: Path, run_final: bool) -> Path:
    trials = study.get_trials(deepcopy=False)
    write_trials_csv(trials, root / "trials.csv")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        print(f"no completed trial yet in '{spec.name}'; wrote {root / 'trials.csv'}")
        return root
    best = study.best_trial
    best_path = write_best_policy(spec, best, root)
    plot_history(trials, spec, root / "history.png")
    imp = importances(study, spec, root / "importances.png")
    corr = {}
    labelled = [t for t in done if t.user_attrs.get("knn_val_top1") is not None]
    if len(labelled) > 3:
        knn = [t.user_attrs["knn_val_top1"] for t in labelled]
        corr = {k: spearman_ci([t.user_attrs[k] for t in labelled], knn) for k in LABEL_FREE}
        for k in LABEL_FREE:  # would selecting by this label-free objective pick as good a policy?
            pick = max(labelled, key=lambda t: t.user_attrs[k])
            corr[k]["picks"] = {"trial": pick.number, "knn_val_top1": pick.user_attrs["knn_val_top1"],
                                "best_knn_val_top1": max(knn)}
    summary = {"objective": spec.objective, "trials": {s.name: sum(t.state == s for t in trials) for s in TrialState},
               "best": {"trial": best.number, "value": best.value, "params": best.params,
                        "user_attrs": best.user_attrs, "policy": str(best_path)},
               "importances": imp, "spearman_vs_knn_val_top1": corr}
    summary["final"] = final_comparison(spec, root, best.number, run_final) if spec.final.enabled else None
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (root / "summary.md").write_text(summary_markdown(spec, summary))
    print(summary_markdown(spec, summary))
    return root


def summary_markdown(spec: SearchSpec, s: dict) -> str:
    b = s["best"]
    lines = [f"# Search {spec.name}", "", f"objective: {s['objective']} (maximised); trials: "
             + ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items() if v), "",
             f"best: trial {b['trial']}, {s['objective']} = {b['value']:.4f} -> best_policy.yaml", ""]
    lines += [f"- `{k}` = {v:.4g}" if isinstance(v, float) else f"- `{k}` = {v}" for k, v in b["params"].items()]
    if isinstance(s["importances"], dict):
        lines += ["", "fANOVA importances: " + ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items())]
    else:
        lines += ["", f"fANOVA importances: {s['importances']}"]
    for k, c in s["spearman_vs_knn_val_top1"].items():
        ci = f" [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]" if c["ci95"] else ""
        pick = c["picks"]
        lines.append(f"Spearman({k}, knn_val_top1) over {c['n']} trials: {c['rho']:.2f}{ci}; selecting by {k} "
                     f"picks trial {pick['trial']} (knn_val_top1 {pick['knn_val_top1']:.4f} vs best "
                     f"{pick['best_knn_val_top1']:.4f})")
    final = s.get("final")
    if final:
        lines += ["", f"best vs base on test ({final['directory']}): per-seed paired differences best - base", "",
                  "| metric | base | best | differences | mean [95 % t-interval] | seeds best > base |",
                  "|---|---|---|---|---|---|"]
        for m, r in final["metrics"].items():
            lines.append(f"| {m} | {np.mean(r['base']):.4f} | {np.mean(r['best']):.4f} | "
                         f"{', '.join(f'{d:+.4f}' for d in r['differences'])} | {r['mean']:+.4f} "
                         f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['positive']}/{r['n']} |")
    return "\n".join(lines) + "\n"
