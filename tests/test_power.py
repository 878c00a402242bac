"""Precision planning: the power arithmetic against statsmodels, `simclr ablate plan`, and MDE in reports."""
import json
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from simclr.ablate.power import POWER, detectable_effect, mde, power, seeds_needed
from simclr.cli import main

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "results" / "cifar_crop_colour_selection"          # per-run records (arm.json), 3 seeds
SPEC = REPO / "configs" / "ablations" / "cifar_crop_colour_selection.yaml"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 10, 20, 50])
@pytest.mark.parametrize("sd", [0.005, 0.02, 0.1, 3.0])
def test_mde_matches_statsmodels(n, sd):
    from statsmodels.stats.power import TTestPower
    d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert mde(sd, n) == pytest.approx(sd * d, rel=1e-5)
    assert power(detectable_effect(n), n) == pytest.approx(POWER, abs=1e-9)


@pytest.mark.parametrize("sd,effect", [(1.0, 2.0), (2.8, 2.0), (2.0, 1.0), (1.0, 0.3), (0.5, 1.5), (3.0, 3.0)])
def test_seeds_needed_matches_statsmodels(sd, effect):
    from statsmodels.stats.power import TTestPower
    n = TTestPower().solve_power(effect_size=effect / sd, alpha=0.05, power=0.8, alternative="two-sided")
    expected = max(2, math.ceil(n - 1e-6))
    assert seeds_needed(sd, effect) == expected
    assert mde(sd, expected) <= effect + 1e-9 and (expected == 2 or mde(sd, expected - 1) > effect)


def test_mde_detects_with_80_percent_power_by_simulation():
    from scipy import stats
    rng = np.random.default_rng(0)
    n, sd = 5, 1.0
    diffs = rng.normal(mde(sd, n), sd, size=(20000, n))
    rejected = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.015)


def test_edges():
    assert mde(1.0, 1) == math.inf and seeds_needed(0.0, 1.0) == 2 and seeds_needed(1.0, 1e-4) is None
    assert mde(0.5, 2) > 5.0 >= mde(0.5, 3) and seeds_needed(0.5, 5.0) == 3  # where statsmodels' solver leaves n < 2
    with pytest.raises(ValueError):
        seeds_needed(1.0, 0.0)


def test_verdicts_at_the_edges():
    import json
    from simclr.ablate.power import verdict
    from simclr.ablate.stats import paired
    one = paired({0: 0.5}, {0: 0.4})
    assert one["ci_low"] is None and one["mde"] is None and one["verdict"] == "n=1, no test"
    assert "Infinity" not in json.dumps(one)   # results.json stays standard JSON
    same = paired({0: 0.4, 1: 0.5}, {0: 0.4, 1: 0.5})
    assert same["verdict"] == "no difference on any seed"
    clear = paired({0: 0.50, 1: 0.51, 2: 0.52}, {0: 0.40, 1: 0.40, 2: 0.41})
    assert clear["verdict"] == "resolved"
    test = {"low": -0.01, "high": 0.2, "z": 1.96, "se": 0.05, "floor": 0.14}
    assert verdict(clear, test) == "within test-sampling error ±9.8"
    noisy = paired({0: 0.5, 1: 0.3, 2: 0.45}, {0: 0.4, 1: 0.4, 2: 0.4})
    assert verdict(noisy, test).startswith("within noise, MDE ") and verdict(noisy, test).endswith(", test floor 14.0")


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "study"
    shutil.copytree(STUDY, root)
    return root


def test_plan_from_a_pilot_prints_mde_and_compute(study, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # where the spec's relative paths resolve
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    assert main(["ablate", "plan", str(SPEC), "--pilot", str(study), "--mde", "2", "--seeds", "10"]) == 0
    out = capsys.readouterr().out
    assert "crop_only vs crop+colour" in out and "colour_only vs crop+colour" in out and "pooled (2 comparisons)" in out
    line = next(x for x in out.splitlines() if x.startswith("crop_only vs crop+colour") and "knn_k20/top1" in x)
    rows = json.loads((STUDY / "results.json").read_text())["rows"]  # the committed report's paired spread
    sd = 100 * next(r for r in rows if r["arm"] == "crop_only" and r["metric"] == "knn_k20/top1")["vs_reference"]["std"]
    _, _, seeds, sd_text, mde_text, upper_text, floor, needed = line.rsplit(None, 7)
    assert seeds == "3" and float(sd_text) == pytest.approx(sd, abs=0.006)
    assert float(mde_text) == pytest.approx(mde(sd, 10), abs=0.06) and int(needed) == seeds_needed(sd, 2.0)
    # 3 seeds estimate the sd loosely: its 80 % upper bound, sd * sqrt(2 / chi2.ppf(0.2, 2)), plans for 2.2x it
    from scipy.stats import chi2
    assert float(upper_text) == pytest.approx(mde(sd * (2 / chi2.ppf(0.2, 2)) ** 0.5, 10), abs=0.06)
    assert floor == "–"   # this older study has no per-image records
    assert "compute: 3 arms x 10 seeds = 30 runs x" in out and "arm.json job started -> ended" in out
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before  # a plan from a pilot writes nothing


@pytest.mark.parametrize("args,message", [
    (["--mde", "0"], "--mde: 0.0 is out of range"),
    (["--mde", "nan"], "--mde: nan is out of range"),
    (["--seeds", "1"], "--seeds: 1 is out of range"),
    (["--pilot-seeds", "1"], "--pilot-seeds: 1 is out of range"),
    (["--pilot", "STUDY", "--pilot-seeds", "3"], "--pilot-seeds: sizes the pilot"),
    (["--pilot", "NOWHERE"], "nowhere is not a folder"),
    (["--pilot", "EMPTY"], "holds no finished runs"),
    (["--pilot", "STUDY", "--pilot-arm", "x"], "--pilot-arm: chooses an arm of the pilot"),
    (["--pilot-arm", "nope"], "--pilot-arm: 'nope' is not an arm of"),
    (["--pilot", "STUDY", "--jobs", "2"], "--jobs: with --pilot, `simclr ablate plan` launches nothing"),
    (["--jobs", "2"], "--jobs: `simclr ablate plan` runs its pilot in this process"),
    (["--mde", "150"], "--mde: 150.0 is out of range"),
    (["--pilot", "STUDY", "--seeds", "1"], "--seeds: 1 is out of range"),
])
def test_plan_refuses_bad_input_with_one_line(study, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(REPO)  # where the spec's relative paths resolve
    (tmp_path / "empty").mkdir()
    args = [str(study) if a == "STUDY" else str(tmp_path / a.lower()) if a.isupper() else a for a in args]
    before = sorted(tmp_path.rglob("*"))
    assert main(["ablate", "plan", str(SPEC), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before


def test_plan_refuses_a_missing_spec_and_plan_options_elsewhere(study, capsys):
    assert main(["ablate", "plan", "nope.yaml", "--pilot", str(study)]) == 2
    assert "nope.yaml: ablation spec not found" in capsys.readouterr().err
    assert main(["ablate", "report", str(study), "--mde", "2"]) == 2
    assert "--mde: go with `simclr ablate plan SPEC`" in capsys.readouterr().err


def test_plan_runs_its_own_pilot_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: t
        base_config: {REPO / 'configs/digits_cpu.yaml'}
        output_dir: {tmp_path}
        overrides: [trainer.max_epochs=1, trainer.progress_bar=false, data.train_per_class=20, data.val_per_class=5,
                    data.test_per_class=10, model.width=8]
        seeds: [0, 1, 2, 3]
        protocols: [knn]
        arms:
          named:
            plain: augment_policies/digits.yaml
            rotated: augment_policies/digits_rotation.yaml
            other: fashion_mnist
        """))
    assert main(["ablate", "plan", str(spec), "--pilot-seeds", "2", "--mde", "5"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "t-pilot"
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["plain-seed0", "plain-seed1", "rotated-seed0",
                                                                 "rotated-seed1"]
    assert "rotated vs plain" in out and "compute: 3 arms x 4 seeds = 12 runs x" in out
    saved = json.loads((root / "plan_power.json").read_text())
    assert saved["planned_seeds"] == 4 and saved["rows"][0]["seeds_needed"] >= 2
    assert "| verdict (" in (root / "results.md").read_text()
    assert main(["ablate", "plan", str(spec), "--pilot-seeds", "2"]) == 0  # rerun: nothing trains again
    assert "finished earlier, skipped" in capsys.readouterr().out


def test_report_states_mde_and_verdict(study, capsys):
    assert main(["ablate", "report", str(study)]) == 0
    md = (study / "results.md").read_text()
    assert "| verdict (knn_k20/top1) |" in md and "MDE = minimal detectable effect" in md
    assert "within noise, MDE" in md and "resolved" in md
    rows = json.loads((study / "results.json").read_text())["rows"]
    p = next(r for r in rows if r["arm"] == "crop_only" and r["metric"] == "knn_k20/top1")["vs_reference"]
    assert p["mde"] == pytest.approx(mde(p["std"], p["seeds"])) and p["verdict"].startswith("within noise")
    assert "d_ref_mde" in (study / "results.csv").read_text().splitlines()[0]


def test_plan_names_the_test_floor_and_a_pilot_at_another_scale(tmp_path, capsys, monkeypatch):
    """The committed pilot recorded per-image results: its kNN comparison has a test floor (shared test set) above
    1 point, so no seed count reaches a 1-point effect; it ran with 20 validation images per class where the
    study config now holds out 100, which the plan says before anything else."""
    monkeypatch.chdir(REPO)
    pilot = tmp_path / "pilot"
    shutil.copytree(REPO / "results" / "cifar_crop_colour-pilot", pilot)
    assert main(["ablate", "plan", "configs/ablations/cifar_crop_colour.yaml", "--pilot", str(pilot), "--mde", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: the pilot trained with other settings than the spec (data.val_per_class: 20 -> 100)" in out
    rows = json.loads((pilot / "results.json").read_text())["rows"]
    floor = 100 * next(r for r in rows if r["arm"] == "crop_only" and r["metric"] == "knn_k20/top1")[
        "vs_reference_test"]["floor"]
    line = next(x for x in out.splitlines() if x.startswith("crop_only vs base") and "knn_k20/top1" in x)
    assert floor > 1 and line.endswith("none (floor)") and f" {floor:.1f} " in line
    assert "a run that also evaluates the floors, one per seed:" in out


def test_a_run_with_an_impossible_time_is_left_out_of_the_compute_estimate(study, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for arm in study.glob("runs/*/arm.json"):   # every run's job times damaged: the estimate falls back on run.json
        record = json.loads(arm.read_text())
        record["job"] = {**record.get("job", {}), "started": float("nan"), "ended": 1.0}
        arm.write_text(json.dumps(record))
    assert main(["ablate", "plan", str(SPEC), "--pilot", str(study)]) == 0
    out = capsys.readouterr().out
    assert "compute: " in out and "nan" not in out.lower().split("compute: ")[1]
