"""The method axis of ablation specs (`methods:`): arms x methods, each compared with its own method's reference,
and the method x policy interaction (a paired difference of differences) checked against NumPy/SciPy."""
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from simclr.ablate.runner import make_tasks
from simclr.ablate.arms import generate_arms, reference_arm
from simclr.ablate.spec import load_spec
from simclr.cli import main
from simclr.config.schema import ConfigError

REPO = Path(__file__).resolve().parents[1]


def spec_file(tmp_path, body):
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: t\nbase_config: {REPO / 'configs/digits_cpu.yaml'}\noutput_dir: {tmp_path}\n"
                    + textwrap.dedent(body))
    return path


ARMS = """
arms:
  named:
    digits: digits
    digits_rotation: digits_rotation
"""


def test_every_arm_runs_with_every_method_and_its_own_overrides(tmp_path):
    spec = load_spec(spec_file(tmp_path, "methods: [simclr, byol]\nmethod_overrides:\n"
                                         "  byol: [method.byol.momentum_base=0.9, optim.lr=0.5]\nreference: digits\n"
                               + ARMS))
    arms = generate_arms(spec)
    assert [a.name for a in arms] == ["digits@simclr", "digits@byol", "digits_rotation@simclr", "digits_rotation@byol"]
    assert arms[3].meta == {"method": "byol", "policy_arm": "digits_rotation"}
    assert arms[0].policy == arms[1].policy and arms[2].policy == arms[3].policy
    assert reference_arm(spec, arms) == "digits@simclr"
    tasks = {t.arm: t for t in make_tasks(spec, arms, tmp_path / "study")}
    assert tasks["digits@simclr"].overrides[-1] == "method.name=simclr"
    assert tasks["digits@byol"].overrides[-3:] == ("method.name=byol", "method.byol.momentum_base=0.9", "optim.lr=0.5")
    assert sum(t.baselines for t in tasks.values()) == 1   # the floors do not depend on the method: once per seed


@pytest.mark.parametrize("body, message", [
    ("methods: [simclr, byl]", "methods[1]: unknown method 'byl'. Did you mean 'byol'?"),
    ("methods: [byol, byol]", "methods[1]: 'byol' is listed twice."),
    ("methods: [simclr]\nmethod_overrides: {byol: [optim.lr=0.5]}",
     "method_overrides.byol: 'byol' is not in methods ['simclr']"),
    ("methods: [simclr, byol]\noverrides: [method.byol.momentum_base=0.9]",
     "overrides[0]: 'method.byol.momentum_base=0.9' would be replaced by the spec's `methods` axis"),
    ("methods: [simclr, byol]\nmethod_overrides: {byol: [seed=3]}", "method_overrides.byol[0]: 'seed=3' would be"),
    ("methods: [simclr, byol]\nmethod_overrides: {byol: [method.byol.momentm=0.9]}",
     "method_overrides.byol: method.byol.momentm: unknown key. Did you mean 'momentum_base'?"),
    ("methods: [simclr, byol]\nmethod_overrides: {byol: [method.vicreg.sim_coeff=3]}",
     "would be ignored: method.name is 'byol'"),
    ("methods: [simclr, byol]\nmethod_overrides: {byol: [model.backbone=timm:vit_small_patch32_224]}",
     "arm digits@byol: model.backbone: timm:vit_small_patch32_224 cannot take 1-channel 16x16 images"),
    ("methods: []", "methods: an empty list; give one or more of simclr, byol, vicreg, mocov3, or drop the key"),
])
def test_a_bad_method_axis_is_one_line_naming_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError) as e:
        load_spec(spec_file(tmp_path, body + "\n" + ARMS))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def _study(root: Path, values: dict, hits: dict | None = None) -> None:
    """A finished study on disk from values[(policy, method)][seed] = top1 (and per-image hits where given)."""
    from simclr.evaluate.records import per_image_record
    runs = []
    labels = np.arange(1000) % 10
    for (pol, method), per_seed in values.items():
        for seed, top1 in per_seed.items():
            name = f"{pol}@{method}"
            run = root / "runs" / f"{name}-seed{seed}"
            run.mkdir(parents=True)
            record = {"metrics": {"simclr": {"linear": {"top1": top1, "top5": 0.9}}}}
            if hits:
                record["per_image"] = per_image_record({"simclr": {"linear": hits[(pol, method)][seed]}}, labels)
            (run / "results.json").write_text(json.dumps(record))
            (run / "arm.json").write_text(json.dumps({"arm": name, "kind": "named", "seed": seed, "results": "results.json",
                                                      "meta": {"method": method, "policy_arm": pol}}))
            runs.append({"key": run.name})
    (root / "plan.json").write_text(json.dumps({"reference": "base@simclr", "runs": runs}))


def test_interaction_is_the_paired_difference_of_differences(tmp_path, capsys):
    rng = np.random.default_rng(0)
    seeds = range(5)
    values = {(p, m): {s: float(rng.uniform(0.3, 0.6)) for s in seeds}
              for p in ("base", "no_colour") for m in ("simclr", "byol")}
    root = tmp_path / "study"
    _study(root, values)
    assert main(["ablate", "report", str(root)]) == 0
    result = json.loads((root / "results.json").read_text())
    assert result["methods"] == ["simclr", "byol"]   # the registry's order, not the order runs finished in
    row = next(r for r in result["interaction"] if r["metric"] == "linear/top1")
    assert row["arm"] == "no_colour" and row["methods"] == ["simclr", "byol"]
    d = np.array([(values["no_colour", "simclr"][s] - values["base", "simclr"][s])
                  - (values["no_colour", "byol"][s] - values["base", "byol"][s]) for s in seeds])
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert row["interaction"]["mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert (row["interaction"]["ci_low"], row["interaction"]["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    drop = np.array([values["no_colour", "byol"][s] - values["base", "byol"][s] for s in seeds])
    assert row["drop"]["byol"]["mean"] == pytest.approx(drop.mean(), abs=1e-12)
    # each arm is compared with its own method's reference, never across methods
    by_arm = {r["arm"]: r for r in result["rows"] if r["metric"] == "linear/top1"}
    assert by_arm["no_colour@byol"]["reference"] == "base@byol"
    assert by_arm["no_colour@byol"]["vs_reference"]["mean"] == pytest.approx(drop.mean(), abs=1e-12)
    assert by_arm["base@byol"]["vs_reference"] is None
    md = (root / "results.md").read_text()
    assert "## Method x policy interaction" in md and "| no_colour | linear/top1 | simclr − byol |" in md
    assert (root / "methods.png").is_file()


@pytest.mark.parametrize("edit, message", [
    (lambda meta: meta.clear(), "no meta.method, while other arms of this study run on a method axis"),
    (lambda meta: meta.update(method="vicreg"), "arm 'no_colour@byol' does not match its meta"),
    (lambda meta: meta.update(method="byl"), "meta.method 'byl' is not a method"),
])
def test_an_arm_record_whose_method_disagrees_with_its_name_is_refused(tmp_path, capsys, edit, message):
    """The report picks each arm's reference and interaction from arm.json's meta: a hand-edited meta would compare
    the wrong runs, so it is refused in one line and nothing is written."""
    root = tmp_path / "study"
    _study(root, {(p, m): {s: 0.4 + 0.01 * s for s in range(3)} for p in ("base", "no_colour") for m in ("simclr", "byol")})
    record_file = root / "runs" / "no_colour@byol-seed1" / "arm.json"
    record = json.loads(record_file.read_text())
    edit(record["meta"])
    record_file.write_text(json.dumps(record))
    assert main(["ablate", "report", str(root)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (root / "results.md").exists()


def test_interaction_test_sampling_is_the_per_image_contrast(tmp_path):
    rng = np.random.default_rng(3)
    hits = {(p, m): {s: rng.random(1000) < 0.4 for s in range(3)} for p in ("base", "crop") for m in ("simclr", "byol")}
    values = {k: {s: float(h.mean()) for s, h in v.items()} for k, v in hits.items()}
    root = tmp_path / "study"
    _study(root, values, hits)
    assert main(["ablate", "report", str(root)]) == 0
    row = next(r for r in json.loads((root / "results.json").read_text())["interaction"] if r["metric"] == "linear/top1")
    c = {k: np.stack([v[s].astype(float) for s in range(3)]) for k, v in hits.items()}        # (S, n)
    contrast = (c["crop", "simclr"] - c["base", "simclr"]) - (c["crop", "byol"] - c["base", "byol"])
    assert row["interaction_test"]["se"] == pytest.approx(contrast.mean(0).std(ddof=1) / np.sqrt(1000), rel=1e-9)


def test_plan_names_the_methods_its_pilot_did_not_train(tmp_path):
    from simclr.ablate.pilot import methods_not_piloted
    spec = load_spec(spec_file(tmp_path, "methods: [simclr, byol, vicreg]\n" + ARMS))
    plain = {"digits": {"meta": {}}, "digits_rotation": {"meta": {}}}   # a pilot without a method axis
    assert methods_not_piloted(spec, plain, []) == ["byol", "vicreg"]   # no run records one: the spec's base method
    run = tmp_path / "pilot" / "runs" / "digits-seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("method:\n  name: byol\n")      # ...but this pilot trained BYOL
    assert methods_not_piloted(spec, plain, [{"run_dir": run}]) == ["simclr", "vicreg"]
    axis = {f"digits@{m}": {"meta": {"method": m, "policy_arm": "digits"}} for m in ("simclr", "byol")}
    assert methods_not_piloted(spec, axis, []) == ["vicreg"]
