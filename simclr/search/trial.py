"""One trial of `simclr search`: its policy from the sampler's values, its run (or the resumed run of the trial it
retries), the kNN monitor's values reported for pruning, and its objectives (simclr.evaluate.proxies)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytorch_lightning as pl

from simclr import train
from simclr.search.spec import SearchSpec, base_policy, build_policy
from simclr.ablate.store import precision_pins
from simclr.config.files import read_yaml
from simclr.config.run import override_config
from simclr.config.schema import ConfigError, to_dict
from simclr.evaluate.proxies import OBJECTIVES, selection_metrics
from simclr.runs.directory import read_record
from simclr.runs.layout import CONFIG, last_checkpoint

MAX_RETRIES = 2


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose worker died or was interrupted: run its parameters again (at most MAX_RETRIES times),
    resuming its run directory."""
    retries = trial.user_attrs.get("retries", 0) + 1
    if retries <= MAX_RETRIES:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries})


class ReportToTrial(pl.Callback):
    """Hands the kNN monitor's value (logged the same epoch) to the Optuna trial; stops training if pruned."""

    def __init__(self, trial: optuna.Trial, every: int, prune: bool):
        self.trial, self.every, self.prune, self.pruned_at = trial, every, prune, None

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        value = trainer.callback_metrics.get("monitor/knn_top1")
        if not self.every or epoch % self.every or value is None:
            return
        self.trial.report(float(value), step=epoch)
        if self.prune and self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def suggest(trial: optuna.Trial, spec: SearchSpec) -> dict:
    values = {}
    for op, space in spec.space.items():
        if space.toggle:
            values[f"{op}.on"] = trial.suggest_categorical(f"{op}.on", [True, False])
        for key, dim in space.params.items():
            name = f"{op}.{key}"
            if dim.choices is not None:
                values[name] = trial.suggest_categorical(name, list(dim.choices))
            else:
                values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
    return values


def trial_precision(root: Path, trainer: dict) -> tuple[str, ...]:
    """Trials of one search train at one precision: where the spec says auto, the values its first trial ran
    with (its config.yaml holds them resolved; '32' / false for a search begun before auto existed)."""
    first = min((root / "runs").glob(f"trial-*/{CONFIG}"), default=None)
    recorded = read_yaml(first, "config file") if first is not None else None
    return precision_pins(recorded.get("trainer") if isinstance(recorded, dict) else None, trainer)


def _train_trial(spec: SearchSpec, trial: optuna.Trial, root: Path, policy_path: Path, reporter) -> Path:
    """Train the trial's run, or resume the run of the trial it retries."""
    retry_of = trial.user_attrs.get("retry_of")
    if retry_of is not None:
        old = trial.study.trials[retry_of].user_attrs.get("run_dir")
        if old and last_checkpoint(old).exists():
            trial.set_user_attr("run_dir", old)
            status = (read_record(Path(old)) or {}).get("status")
            print(f"    trial {trial.number} retries trial {retry_of}: resuming {old}", flush=True)
            return Path(old) if status == "finished" else train.run(resume=old, callbacks=[reporter]).run_dir
    name = f"trial-{trial.number:04d}"
    run_dir = root / "runs" / name
    if run_dir.exists():
        raise ConfigError(f"{run_dir}: exists but storage has no such trial yet; the storage and the study "
                          "directory disagree. Use a new name or output_dir.")
    trial.set_user_attr("run_dir", str(run_dir))
    pins = trial_precision(root, to_dict(spec.base_run.trainer))
    cfg = override_config(spec.base_run, [*pins, f"seed={spec.seed}", f"name={name}", f"output_dir={root / 'runs'}",
                                          f"policy={policy_path}"])
    return train.run(cfg, callbacks=[reporter]).run_dir


def run_trial(trial: optuna.Trial, spec: SearchSpec, root: Path) -> float:
    started = time.time()
    values = suggest(trial, spec)
    name = f"trial-{trial.number:04d}"
    policy = build_policy(spec, base_policy(spec), values, name)
    policy_path = root / "policies" / f"{name}.yaml"
    with open(policy_path, "x") as fh:  # "x": never overwrite another trial's policy
        fh.write(policy.to_yaml())
    trial.set_user_attr("policy_file", str(policy_path))
    reporter = ReportToTrial(trial, spec.base_run.trainer.knn_monitor_every, spec.prunes)
    try:
        run_dir = _train_trial(spec, trial, root, policy_path, reporter)
        trial.set_user_attr("train_seconds", time.time() - started)
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", reporter.pruned_at)
            raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
        metrics = selection_metrics(run_dir)
    except (KeyboardInterrupt, SystemExit) as e:  # Lightning turns Ctrl-C during fit into SystemExit(1)
        retry(trial.study, trial)  # the next `simclr search` runs these parameters first, resuming the run
        if isinstance(e, KeyboardInterrupt):
            raise  # train.RunInterrupted keeps its signal's name (SIGTERM: the CLI exits 143)
        raise KeyboardInterrupt from e  # Optuna records FAIL for this, and the CLI exits 130
    (run_dir / "search_metrics.json").write_text(json.dumps(metrics, indent=2))
    for key in OBJECTIVES:
        trial.set_user_attr(key, metrics[key])
    trial.set_user_attr("seconds", time.time() - started)
    value = metrics[spec.objective]
    if value is None:
        raise ConfigError(f"objective {spec.objective}: no labelled validation split in this data; use a "
                          "label-free objective.")
    return float(value)
