"""A search's cost, printed before it starts (trials x epochs x steps x measured step time), and its ETA."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import optuna
import pytorch_lightning as pl
from optuna.trial import TrialState

from simclr import train
from simclr.search.spec import SearchSpec, base_policy
from simclr.config.run import override_config
from simclr.utils import format_duration

CALIBRATION_STEPS = 6


class StepTimer(pl.Callback):
    """Wall time of each training step; the first (which pays for warm-up) is not counted."""

    def __init__(self):
        self.times: list[float] = []
        self.train_images = 0
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()
        self.train_images = len(trainer.datamodule.splits["train"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._start)

    @property
    def seconds_per_step(self) -> float:
        kept = sorted(self.times[1:] or self.times)
        return kept[len(kept) // 2]  # median: robust to a step that waited on another process


def measure_step_seconds(spec: SearchSpec) -> tuple[float, int]:
    """(seconds per training step, steps per epoch) from a few steps of the base policy through `train.run`,
    in a throw-away directory (the study directory gets nothing from it)."""
    with tempfile.TemporaryDirectory(prefix="simclr-search-cost-") as tmp:
        policy = Path(tmp) / "base.yaml"
        policy.write_text(base_policy(spec).to_yaml())
        cfg = override_config(spec.base_run, [f"seed={spec.seed}", "name=calibration", f"output_dir={tmp}",
                                              f"policy={policy}", "trainer.max_epochs=1",
                                              f"trainer.limit_train_batches={CALIBRATION_STEPS}",
                                              "trainer.knn_monitor_every=0", "trainer.progress_bar=false"])
        timer = StepTimer()
        train.run(cfg, callbacks=[timer])
    full = spec.base_run
    steps = timer.train_images // (full.data.batch_size * full.trainer.devices * full.trainer.num_nodes)
    if full.trainer.limit_train_batches:
        steps = min(steps, full.trainer.limit_train_batches)
    return timer.seconds_per_step, max(1, steps)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]


def announce_cost(spec: SearchSpec, study: optuna.Study, root: Path, storage: str) -> None:
    cfg = spec.base_run
    done = _finished(study)
    left = max(0, spec.trials - len(done))
    print(f"search '{spec.name}' -> {root} (storage {storage})")
    timed = [t.user_attrs["seconds"] for t in done if "seconds" in t.user_attrs]
    if timed:
        per = sum(timed) / len(timed)
        print(f"cost: {len(done)}/{spec.trials} trials done; {left} left x {format_duration(per)} per trial "
              f"(measured mean) = {format_duration(left * per)} for one worker", flush=True)
        return
    seconds, steps = measure_step_seconds(spec)
    total = left * cfg.trainer.max_epochs * steps * seconds
    print(f"cost: {left} trials x {cfg.trainer.max_epochs} epochs x {steps} steps/epoch x {seconds:.3f} s/step "
          f"(measured, base policy) = {format_duration(total)} of training for one worker, plus evaluation per trial",
          flush=True)


class Eta:
    """Prints one line per finished trial: state, objective, best so far, and the ETA at this worker's pace."""

    def __init__(self, spec: SearchSpec, study: optuna.Study):
        self.spec, self.started, self.done_here = spec, time.time(), 0

    def trial_done(self, study: optuna.Study, number: int) -> None:
        self.done_here += 1
        trial = study.get_trials(deepcopy=False)[number]
        finished = _finished(study)
        left = max(0, self.spec.trials - len(finished))
        per = (time.time() - self.started) / self.done_here
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no finished trial yet"
        value = f"{self.spec.objective}={trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        print(f"[{len(finished)}/{self.spec.trials}] trial {trial.number}: {value}; {best}; "
              f"ETA {format_duration(left * per)}", flush=True)
