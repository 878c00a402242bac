"""Ablations: spec errors name the key, the Fig. 5 arm set, and a resumable 2-arm run through the CLI."""
import json
import textwrap

import pytest

import simclr.ablate.runner as runner
from simclr.ablate import generate_arms, load_spec
from simclr.ablate.spec import PairwiseSpec, pairwise_arms
from simclr.augment import load_policy
from simclr.cli import main
from simclr.config.schema import ConfigError

OPS = ["random_resized_crop", "color_jitter", "gaussian_blur", "rotation", "gaussian_noise", "random_erasing",
       "horizontal_flip"]


def spec_file(tmp_path, body):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.format(out=tmp_path) + textwrap.dedent(body))
    return path


BASE = """
name: t
base_config: configs/digits_cpu.yaml
output_dir: {out}
"""


@pytest.mark.parametrize("body,key", [
    ("arms: {drop_on: true}", "arms.drop_on: unknown key. Did you mean 'drop_one'"),
    ("arms: {}", "arms: no arms"),
    ("arms: {pairwise: {ops: [color_jiter]}}", "arms.pairwise.ops[0]: unknown op 'color_jiter'"),
    ("arms: {sweep: {op: color_jitter, param: strength, values: [0.5]}}", "arms.sweep.param: 'strength'"),
    ("arms: {sweep: {op: color_jitter, param: s, values: [-1]}}", "s: -1.0 is out of range"),
    ("arms: {drop_one: true}\nseeds: [-1]", "seeds[0]: -1 is out of range"),
    ("arms: {drop_one: true}\nprotocols: [knn, svm]", "protocols[1]: unknown 'svm'"),
    ("arms: {drop_one: true}\noverrides: [trainer.max_epoch=3]", "trainer.max_epoch: unknown key"),
    ("arms: {named: {x: nope.yaml}}", "policy 'nope.yaml' not found"),
])
def test_spec_errors_name_the_key(tmp_path, body, key):
    path = spec_file(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_pairwise_is_exactly_the_fig5_arm_set():
    base = load_policy("simclr_cifar")
    arms = pairwise_arms(base, PairwiseSpec(ops=tuple(OPS)))
    assert len(arms) == len(OPS) ** 2
    assert {(a.meta["first"], a.meta["second"]) for a in arms} == {(x, y) for x in OPS for y in OPS}
    for arm in arms:
        branch1, branch2 = ([o.name for o in v] for v in arm.policy.views)
        assert branch2 == ["random_resized_crop", "normalize"]  # the other branch: crop only
        first, second = arm.meta["first"], arm.meta["second"]
        expected = [n for n in ([first] if first == second else [first, second]) if n != "random_resized_crop"]
        assert branch1 == ["random_resized_crop", *expected, "normalize"]
        assert all(o.params.p == 1.0 for o in arm.policy.views[0])
    # parameters come from the base policy where it has the op (colour strength s=0.5 here)
    jitter = next(o for a in arms for o in a.policy.views[0] if o.name == "color_jitter")
    assert jitter.params.s == 0.5


def test_drop_one_and_sweep_arms(tmp_path):
    spec = load_spec(spec_file(tmp_path, """
        base_policy: simclr_cifar
        arms:
          drop_one: true
          sweep: {op: color_jitter, param: s, values: [0, 0.25, 0.5, 1.0]}
        """))
    names = [a.name for a in generate_arms(spec)]
    assert names == ["base", "drop-random_resized_crop", "drop-horizontal_flip", "drop-color_jitter",
                     "drop-grayscale", "color_jitter.s=0", "color_jitter.s=0.25", "color_jitter.s=0.5",
                     "color_jitter.s=1"]


def test_two_arm_ablation_runs_and_resumes_without_rerunning_finished_arms(tmp_path, monkeypatch, capsys):
    path = spec_file(tmp_path, """
        overrides: [trainer.max_epochs=1, trainer.progress_bar=false, data.val_per_class=5]
        seeds: [0]
        protocols: [knn]
        arms:
          named:
            plain: augment_policies/digits.yaml
            rotated: augment_policies/digits_rotation.yaml
        """)
    real_evaluate = runner.evaluate_run
    calls = {"train": 0}
    real_train = runner.train.run

    def counting_train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    def interrupt_on_second(run_dir, *a, **k):
        if "rotated" in str(run_dir):
            raise KeyboardInterrupt
        return real_evaluate(run_dir, *a, **k)

    monkeypatch.setattr(runner.train, "run", counting_train)
    monkeypatch.setattr(runner, "evaluate_run", interrupt_on_second)
    assert main(["ablate", str(path)]) == 130
    assert calls["train"] == 2
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert list(manifest["finished"]) == ["plain-seed0"]

    monkeypatch.setattr(runner, "evaluate_run", real_evaluate)
    assert main(["ablate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "plain-seed0: finished earlier, skipped" in out
    assert calls["train"] == 2  # the rotated arm had finished training: only its evaluation reran
    root = tmp_path / "t"
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["plain-seed0", "rotated-seed0"]
    for f in ("results.csv", "results.md", "results.json", "arms.png"):
        assert (root / f).exists(), f
    assert "| rotated |" in (root / "results.md").read_text()
    # the report is rebuilt from results alone
    (root / "results.md").unlink()
    assert main(["ablate", "report", str(root)]) == 0
    assert (root / "results.md").exists()


def test_dry_run_lists_arms_and_runs_nothing(tmp_path, capsys):
    path = spec_file(tmp_path, "arms: {drop_one: true}\n")
    assert main(["ablate", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "## drop-gaussian_noise (drop)" in out and not (tmp_path / "t").exists()


def test_sweep_adds_no_base_arm_when_the_base_value_is_swept(tmp_path):
    spec = load_spec(spec_file(tmp_path, """
        base_policy: simclr_cifar
        arms:
          sweep: {op: color_jitter, param: s, values: [0.25, 0.5]}
        """))
    assert [a.name for a in generate_arms(spec)] == ["color_jitter.s=0.25", "color_jitter.s=0.5"]
    spec = load_spec(spec_file(tmp_path, """
        base_policy: simclr_cifar
        arms:
          sweep: {op: color_jitter, param: s, values: [1.0]}
        """))
    assert [a.name for a in generate_arms(spec)] == ["base", "color_jitter.s=1"]
