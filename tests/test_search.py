"""Policy search: spec errors name the key, trial values -> policy, the label-free rotation proxy, paired
statistics against scipy, and small end-to-end studies (pruning, resume after Ctrl-C, 2 concurrent workers)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from scipy.stats import spearmanr, ttest_rel

import simclr.search.study as search
import simclr.search.trial as search_trial
from simclr.search.final import paired_stats
from simclr.search.report import spearman_ci
from simclr.search.spec import build_policy, base_policy, load_search_spec
from simclr.augment import eval_preprocess, load_policy
from simclr.cli import main
from simclr.config.schema import ConfigError
from simclr.data.formats import ImageData, read_digits
from simclr.evaluate.proxies import rotation_prediction

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = [o for o in TINY if not o.startswith(("name=", "seed=", "policy="))]


def spec_file(tmp_path, body, trials=3, epochs=2, extra=""):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("trainer.max_epochs")] + [f"trainer.max_epochs={epochs}"]
    path = tmp_path / "search.yaml"
    given = textwrap.dedent(extra) + textwrap.dedent(body)
    header = textwrap.dedent(f"""
        name: s
        base_config: {ROOT / 'configs/digits_cpu.yaml'}
        overrides: {json.dumps(overrides)}
        trials: {trials}
        startup_trials: 2
        heartbeat_seconds: 30
        output_dir: {tmp_path / 'out'}
        """)
    # a key the test gives replaces the default (a key written twice is refused, as in any simclr YAML)
    keep = [line for line in header.splitlines() if line.split(":")[0] + ":" not in
            {g.split(":")[0] + ":" for g in given.splitlines() if g and not g.startswith(" ")}]
    path.write_text("\n".join(keep) + "\n" + given)
    return path


SPACE = """
space:
  rotation:
    toggle: true
    fixed: {p: 1.0}
    params:
      degrees: {low: 0, high: 180, bound: symmetric}
  random_resized_crop:
    params:
      scale: {low: 0.2, high: 0.9, bound: lower}
"""


@pytest.mark.parametrize("body,key", [
    ("space:\n  rotation: {toggle: true}\n  rotation: {toggle: false}\n", "key 'rotation' appears twice"),
    ("space: {rotaton: {toggle: true}}", "space.rotaton: unknown op 'rotaton'. Did you mean 'rotation'"),
    ("space: {rotation: {params: {degree: {low: 0, high: 9, bound: symmetric}}}}",
     "space.rotation.params.degree: not a parameter of rotation. Did you mean 'degrees'"),
    ("space: {rotation: {params: {degrees: {low: 0, high: 9}}}}", "space.rotation.params.degrees: rotation.degrees "
                                                                   "is a [min, max] pair"),
    ("space: {rotation: {params: {p: {low: 0, high: 1, bound: lower}}}}", "space.rotation.params.p.bound"),
    ("space: {rotation: {params: {p: {low: 1, high: 0}}}}", "space.rotation.params.p.high: must be > low"),
    ("space: {rotation: {params: {p: {lo: 0, high: 1}}}}", "space.rotation.params.p.lo: unknown key. Did you mean 'low'"),
    ("space: {rotation: {params: {p: {low: 0, high: 2}}}}", "space.rotation.params.p.high: 2.0 makes an invalid "
                                                            "rotation: views[0].ops[3].p: 2.0 is out of range"),
    ("space: {color_jitter: {params: {s: {low: 0, high: 2}, hue: {low: 0.1, high: 0.3}}}}",
     "at the high end of every range: "),  # each end alone is valid; together hue * s = 0.6 > 0.5 turns
    ("space: {rotation: {}}", "space.rotation: nothing to search"),
    ("space: {rotation: {params: {p: {low: 0, high: 1, step: 0}}}}", "space.rotation.params.p.step: must be > 0"),
    ("objective: knn_val_top\nspace: {rotation: {toggle: true}}", "objective: 'knn_val_top' is not allowed. Did you mean 'knn_val_top1'"),
    ("objective: rankme\npruner: {kind: median}\nspace: {rotation: {toggle: true}}", "pruner.kind: median prunes"),
    ("final: {seeds: [0, 1]}\nspace: {rotation: {toggle: true}}", "final.seeds: contains the search seed 0"),
    ("storage: 'not a url'\nspace: {rotation: {toggle: true}}", "storage: 'not a url' is not an SQLAlchemy URL"),
    ("name: ../x\nspace: {rotation: {toggle: true}}", "name: '../x' becomes a directory"),
    ("overrides: [data.name=stl10, data.path=stl, data.train_split=unlabeled]\nspace: {rotation: {toggle: true}}",
     "objective: knn_val_top1 needs labelled training images"),
])
def test_spec_errors_name_the_key(tmp_path, body, key):
    path = spec_file(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_search_spec(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_report_and_bad_storage_are_one_line_errors(tmp_path, capsys):
    assert main(["search", str(spec_file(tmp_path, SPACE)), "--report"]) == 2
    assert "no search here yet" in capsys.readouterr().err
    path = spec_file(tmp_path, SPACE, extra="storage: 'sqlite:////nonexistent-dir/x/study.db'\n")
    assert main(["search", str(path), "--worker"]) == 2
    assert "storage sqlite:////nonexistent-dir/x/study.db: cannot open it" in capsys.readouterr().err


def test_trial_values_make_the_expected_policy(tmp_path):
    spec = load_search_spec(spec_file(tmp_path, SPACE))
    base = base_policy(spec)
    assert base.name == "digits"
    on = build_policy(spec, base, {"rotation.on": True, "rotation.degrees": 40.0, "random_resized_crop.scale": 0.3},
                      "t")
    names = [o.name for o in on.views[0]]
    assert names == ["random_resized_crop", "color_jitter", "gaussian_noise", "rotation", "normalize"]
    ops = {o.name: o.params for o in on.views[0]}
    assert ops["rotation"].degrees == (-40.0, 40.0) and ops["rotation"].p == 1.0
    assert ops["random_resized_crop"].scale == (0.3, 1.0)           # lower end searched, base max kept
    assert ops["random_resized_crop"].size == 16                    # everything else from the base
    assert on.views[0] == on.views[1]
    off = build_policy(spec, base, {"rotation.on": False, "rotation.degrees": 40.0, "random_resized_crop.scale": 0.5},
                       "t")
    assert [o.name for o in off.views[0]] == ["random_resized_crop", "color_jitter", "gaussian_noise", "normalize"]
    assert off.views == base.views  # scale 0.5 is the base value: the base policy itself
    (tmp_path / "p.yaml").write_text(off.to_yaml())
    assert load_policy(tmp_path / "p.yaml").views == off.views  # the written YAML reads back as the same policy


class Flatten(torch.nn.Module):
    """Raw pixels as features; `orbit=True` sums over the four 90-degree rotations (exactly rotation-invariant)."""

    def __init__(self, orbit=False):
        super().__init__()
        self.dummy, self.orbit = torch.nn.Parameter(torch.zeros(1)), orbit

    def forward(self, x):
        if self.orbit:
            x = sum(torch.rot90(x, k, dims=(-2, -1)) for k in range(4))
        return x.flatten(1) + 0 * self.dummy


def test_rotation_proxy_separates_orientation_aware_from_invariant_features():
    digits = read_digits("train")
    data = ImageData(digits.images[:200], digits.labels[:200], digits.classes)
    pre = eval_preprocess(load_policy("digits"))
    assert rotation_prediction(Flatten(), data, pre) > 0.6  # raw pixels keep orientation (chance: 0.25)
    # identical features for all four rotations: the probe gives one answer per image, right once in four
    assert rotation_prediction(Flatten(orbit=True), data, pre) == pytest.approx(0.25, abs=1e-9)


def test_paired_stats_match_scipy():
    rng = np.random.default_rng(0)
    base, other = rng.normal(0.5, 0.05, 5), rng.normal(0.52, 0.05, 5)
    got = paired_stats(base.tolist(), other.tolist())
    ref = ttest_rel(other, base).confidence_interval(0.95)
    assert got["mean"] == pytest.approx(float(np.mean(other - base)))
    assert got["ci95"] == pytest.approx([ref.low, ref.high])
    assert got["positive"] + got["negative"] == 5
    assert got["sign_agreement"] == max(got["positive"], got["negative"]) / 5
    x, y = rng.normal(size=20), rng.normal(size=20)
    r = spearman_ci(x, y)
    assert r["rho"] == pytest.approx(spearmanr(x, y).statistic) and r["ci95"][0] < r["rho"] < r["ci95"][1]


def _study(spec_path):
    spec = load_search_spec(spec_path)
    return spec, optuna.load_study(study_name=spec.name, storage=search.storage_url(spec))


def test_search_end_to_end_with_pruning_outputs_and_final_comparison(tmp_path, monkeypatch, capsys):
    path = spec_file(tmp_path, SPACE, trials=3, epochs=2, extra="final: {seeds: [1, 2], protocols: [knn]}\n")
    real = optuna.trial.Trial.should_prune
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 2 or real(self))
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cost: 3 trials x 2 epochs x 4 steps/epoch x" in out and "ETA" in out
    spec, study = _study(path)
    root = tmp_path / "out" / "s"
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    pruned = study.trials[2]
    assert pruned.user_attrs["pruned_at_epoch"] == 1 and list(pruned.intermediate_values) == [1]
    assert json.loads((root / "runs/trial-0002/run.json").read_text())["epoch"] == 1  # training stopped early
    for t in study.trials[:2]:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == root / "runs" / f"trial-{t.number:04d}"
        # the objective (final encoder, val split) equals the kNN monitor's last value: two code paths, one number
        assert t.value == pytest.approx(t.intermediate_values[2], abs=1e-6)
        assert {"knn_val_top1", "rankme", "rotation_acc"} <= set(t.user_attrs)
        trained = load_policy(run_dir / "policy.yaml")
        assert trained.views == build_policy(spec, base_policy(spec), t.params, "x").views
    best = load_policy(root / "best_policy.yaml")  # what `simclr policy check` runs
    assert best.views == load_policy(study.best_trial.user_attrs["policy_file"]).views
    assert main(["policy", "check", str(root / "best_policy.yaml")]) == 0
    for f in ("trials.csv", "history.png", "importances.png", "summary.md", "comparison.json"):
        assert (root / f).exists(), f
    importances = json.loads((root / "summary.json").read_text())["importances"]
    assert set(importances) == set(study.best_trial.params) and sum(importances.values()) == pytest.approx(1.0)
    comparison = json.loads((root / "comparison.json").read_text())["metrics"]["knn_k20/top1"]
    assert comparison["seeds"] == [1, 2]
    assert comparison["differences"] == pytest.approx(np.subtract(comparison["best"], comparison["base"]).tolist())
    # a second invocation continues: no new trial, no retraining of the final arms
    assert main(["search", str(path)]) == 0
    assert len(_study(path)[1].trials) == 3
    assert "best-seed2: finished earlier, skipped" in capsys.readouterr().out
    # a hand-edited best_policy.yaml is not overwritten by a report
    edited = (root / "best_policy.yaml").read_text() + "# my edit\n"
    (root / "best_policy.yaml").write_text(edited)
    assert main(["search", str(path), "--report"]) == 2
    assert "best_policy.yaml: edited since simclr wrote it" in capsys.readouterr().err
    assert (root / "best_policy.yaml").read_text() == edited
    # the same directory with another space is refused, naming what changed
    changed = spec_file(tmp_path, SPACE.replace("high: 180", "high: 90"), trials=3)
    assert main(["search", str(changed)]) == 2
    assert "different space" in capsys.readouterr().err


def test_interrupted_trial_is_retried_and_resumes_its_run(tmp_path, monkeypatch):
    path = spec_file(tmp_path, SPACE, trials=2, epochs=2, extra="final: {enabled: false}\n")
    real_run = search_trial.train.run

    class StopAfterFirstEpoch(search_trial.pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            trainer.should_stop = True

    def interrupting(cfg=None, resume=None, callbacks=()):
        # trial 1 is cut after its first epoch (checkpoint written), then Ctrl-C arrives
        if cfg is not None and cfg.name == "trial-0001":
            real_run(cfg, callbacks=[*callbacks, StopAfterFirstEpoch()])
            raise KeyboardInterrupt
        return real_run(cfg, resume=resume, callbacks=callbacks)

    monkeypatch.setattr(search_trial.train, "run", interrupting)
    assert main(["search", str(path)]) == 130
    _, study = _study(path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[2].user_attrs["retry_of"] == 1
    monkeypatch.setattr(search_trial.train, "run", real_run)
    assert main(["search", str(path)]) == 0
    _, study = _study(path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    retry = study.trials[2]
    assert retry.params == study.trials[1].params
    root = tmp_path / "out" / "s"
    assert retry.user_attrs["run_dir"] == str(root / "runs/trial-0001")  # resumed, not restarted
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["trial-0000", "trial-0001"]
    assert sorted((root / "runs/trial-0001/csv").iterdir())[-1].name == "part-2"  # a second training segment


@pytest.mark.slow
def test_ctrl_c_is_one_line_with_the_resume_command_and_the_rerun_resumes_the_trial(tmp_path):
    """A real `simclr search` process gets SIGINT while its trial trains (after the trial's first checkpoint): it
    exits 130 with one line saying how to resume, no traceback; the command it names retries the trial, resuming
    its run."""
    slow = [o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_epochs", "data.train_per_class"))]
    path = spec_file(tmp_path, SPACE, trials=1, extra=f"final: {{enabled: false}}\noverrides: "
                     f"{json.dumps([*slow, 'trainer.max_epochs=3', 'data.train_per_class=80'])}\n")
    run_dir = tmp_path / "out" / "s" / "runs" / "trial-0000"
    proc = subprocess.Popen([sys.executable, "-m", "simclr.cli", "search", str(path)], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 300, "the trial never wrote its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "failed" not in err, err  # nor Optuna's "Trial 0 failed ..." with one
    assert err.strip().splitlines()[-1] == (  # the rest is Lightning's own notes, as in any run
        f"interrupted: SIGINT during trial 0 of search 's'; resume with: simclr search {path}"), err
    _, study = _study(path)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert main(["search", str(path)]) == 0
    _, study = _study(path)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["run_dir"] == str(run_dir)  # resumed, not restarted
    assert sorted((run_dir / "csv").iterdir())[-1].name == "part-2"  # a second training segment
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_two_concurrent_workers_share_one_sqlite_study(tmp_path):
    path = spec_file(tmp_path, SPACE, trials=3, epochs=1, extra="final: {enabled: false}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "simclr.cli", "search", str(path), "--worker"]
    workers = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    _, study = _study(path)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in trials)
    root = tmp_path / "out" / "s"
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == 3
    assert sorted(p.name for p in (root / "runs").iterdir()) == [f"trial-{n:04d}" for n in range(3)]
    assert sorted(p.name for p in (root / "policies").iterdir()) == [f"trial-{n:04d}.yaml" for n in range(3)]
    for t in trials:
        assert json.loads((Path(t.user_attrs["run_dir"]) / "search_metrics.json").read_text())["knn_val_top1"] == t.value
    # the two workers sampled different startup parameters (per-trial sampler seeds)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3


def test_an_asymmetric_base_keeps_a_searched_op_on_its_own_view_only(tmp_path):
    spec = load_search_spec(spec_file(tmp_path, """
        base_policy: byol_asymmetric
        space:
          solarize:
            params:
              threshold: {low: 0.3, high: 0.9}
        """))
    base = base_policy(spec)
    trial = build_policy(spec, base, {"solarize.threshold": 0.7}, "t")
    assert [o.name for o in trial.views[0]] == [o.name for o in base.views[0]]  # view 1 never had solarize
    [solarize] = [o for o in trial.views[1] if o.name == "solarize"]
    assert solarize.params.threshold == 0.7 and solarize.params.p == 0.2  # searched value, base's p kept


def test_later_trials_train_at_the_precision_of_the_first(tmp_path):
    """A search begun before `auto` (its trials' config.yaml say '32' / false) keeps its later trials in fp32;
    a value the spec sets explicitly is its own."""
    from simclr.search.trial import trial_precision
    auto = {"precision": "auto", "channels_last": "auto"}
    assert trial_precision(tmp_path, auto) == ()  # the first trial resolves for itself
    first = tmp_path / "runs" / "trial-0000"
    first.mkdir(parents=True)
    (first / "config.yaml").write_text("trainer:\n  precision: '32'\n  channels_last: false\n")
    later = tmp_path / "runs" / "trial-0001"
    later.mkdir()
    (later / "config.yaml").write_text("trainer:\n  precision: bf16-mixed\n  channels_last: true\n")
    assert trial_precision(tmp_path, auto) == ("trainer.precision=32", "trainer.channels_last=false")
    assert trial_precision(tmp_path, {"precision": "bf16-mixed", "channels_last": "auto"}) == (
        "trainer.channels_last=false",)


def test_final_comparison_hands_the_launcher_the_spec_its_file_records(tmp_path, monkeypatch):
    """The best-vs-base ablation reaches the launcher as data; the spec file written beside it (for the record and
    for `simclr ablate`) loads as the very same spec."""
    import simclr.search.final as final
    from simclr.ablate.spec import load_spec
    spec = load_search_spec(spec_file(tmp_path, SPACE))
    root = tmp_path / "out" / "s"
    (root / "policies").mkdir(parents=True)
    (root / "base_policy.yaml").write_text(base_policy(spec).to_yaml())
    best = build_policy(spec, base_policy(spec), {"rotation.on": True, "rotation.degrees": 40.0,
                                                  "random_resized_crop.scale": 0.3}, "best")
    (root / "best_policy.yaml").write_text(best.to_yaml())
    launched = []
    monkeypatch.setattr(final, "launch_spec", lambda ablation, path, resume: launched.append((ablation, path)))
    final.run_final(spec, root, 3)
    [(ablation, path)] = launched
    assert path == root / "final-trial-0003.yaml" and ablation == load_spec(path)
    assert ablation.seeds == spec.final.seeds and ablation.output_dir == str(root)
    assert load_policy(root / "policies" / "final-best-0003.yaml").views == best.views
