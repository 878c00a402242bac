"""Ablations: spec errors name the key, the Fig. 5 arm set, and a resumable 2-arm run through the CLI."""
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import simclr.ablate.runner as runner
from simclr.ablate import generate_arms, load_spec
from simclr.ablate.arms import FIG5_OPS, FIG5_TRANSFORMS, pairwise_arms
from simclr.ablate.spec import PairwiseSpec
from simclr.augment import load_policy
from simclr.cli import main
from simclr.config.schema import ConfigError

REPO = Path(__file__).resolve().parents[1]

OPS = ["random_resized_crop", "color_jitter", "gaussian_blur", "rotation", "gaussian_noise", "random_erasing",
       "horizontal_flip"]


def spec_file(tmp_path, body):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.format(out=tmp_path, config=REPO / "configs/digits_cpu.yaml") + textwrap.dedent(body))
    return path


BASE = """
name: t
base_config: {config}
output_dir: {out}
"""


@pytest.mark.parametrize("body,key", [
    ("arms: {drop_on: true}", "arms.drop_on: unknown key. Did you mean 'drop_one'"),
    ("arms: {}", "arms: no arms"),
    ("arms: {pairwise: {ops: [colr]}}", "arms.pairwise.ops[0]: unknown transformation 'colr'"),
    ("arms: {pairwise: {ops: [crop, crop]}}", "arms.pairwise.ops[1]: 'crop' is listed twice"),
    ("arms: {drop_one: true}\nreference: bse", "reference: 'bse' is not an arm. Did you mean 'base'"),
    ("arms: {sweep: {op: color_jitter, param: strength, values: [0.5]}}", "arms.sweep.param: 'strength'"),
    ("arms: {sweep: {op: color_jitter, param: s, values: [-1]}}", "s: -1.0 is out of range"),
    ("arms: {drop_one: true}\nseeds: [-1]", "seeds[0]: -1 is out of range"),
    ("arms: {drop_one: true}\nprotocols: [knn, svm]", "protocols[1]: unknown 'svm'"),
    ("arms: {drop_one: true}\noverrides: [trainer.max_epoch=3]", "trainer.max_epoch: unknown key"),
    ("arms: {named: {x: nope.yaml}}", "policy 'nope.yaml' not found"),
    ("arms: {drop_one: true}\nprotocols: [knn, selection]\noverrides: [data.name=stl10, data.path=stl, "
     "data.train_split=unlabeled]", "protocols: ['knn'] fit on labelled training images"),
])
def test_spec_errors_name_the_key(tmp_path, body, key):
    path = spec_file(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_pairwise_is_the_fig5_protocol_arm_set():
    """Ordered 7x7 over the paper's transformations + a flip row: shared base crop, branch 1 = A or A then B,
    branch 2 = the identity of the crop (normalize only)."""
    base = load_policy("simclr_cifar")
    spec = PairwiseSpec()
    arms = pairwise_arms(base, spec)
    ops = list(FIG5_OPS)
    assert len(arms) == len(ops) ** 2 + 1 + len(ops)
    assert {(a.meta["first"], a.meta["second"]) for a in arms} == \
        {(x, y) for x in ops for y in ops} | {("flip", "flip")} | {("flip", y) for y in ops}
    crop = next(o for o in base.views[0] if o.name == "random_resized_crop")
    for arm in arms:
        assert arm.policy.shared == (crop,)                                   # one crop, drawn once per image
        assert [o.name for o in arm.policy.views[1]] == ["normalize"]        # branch 2: the crop itself
        first, second = arm.meta["first"], arm.meta["second"]
        expected = [op for t in ([first] if first == second else [first, second]) for op, _ in FIG5_TRANSFORMS[t]]
        assert [o.name for o in arm.policy.views[0]] == [*expected, "normalize"]
    by_name = {a.name: a.policy for a in arms}
    further = by_name["pair-crop"].views[0][0]                               # crop under test: a further crop
    assert further.name == "random_resized_crop" and further.params.scale == crop.params.scale
    colour = {o.name: o.params for o in by_name["pair-color"].views[0]}
    assert colour["color_jitter"].s == 0.5 and colour["color_jitter"].p == 0.8 and colour["grayscale"].p == 0.2
    assert by_name["pair-rotate"].views[0][0].params.angles == (90.0, 180.0, 270.0)
    unordered = pairwise_arms(base, PairwiseSpec(ops=("crop", "color", "blur"), extra_rows=(), ordered=False))
    assert [a.name for a in unordered] == ["pair-crop", "pair-crop+color", "pair-crop+blur", "pair-color",
                                          "pair-color+blur", "pair-blur"]


def test_fig5_flip_arm_pixel_by_pixel():
    """Diagonal flip arm: view 2 is exactly the shared crop, view 1 exactly its mirror image."""
    from simclr.augment import TwoViewAugmenter, policy_from_dict
    base = load_policy("simclr_cifar")
    arm = next(a for a in pairwise_arms(base, PairwiseSpec()) if a.name == "pair-flip")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    aug = TwoViewAugmenter(arm.policy, seed=3)
    v1, v2 = (aug.view(x, i, normalize=False, _float=s) for s in [aug.shared_view(x)] for i in (0, 1))
    # the shared crop, independently: the base crop alone, drawn from the same `shared` stream
    crop_only = policy_from_dict({"shared": [arm.policy.shared[0].to_dict()], "ops": [{"normalize": {}}]})
    ref = TwoViewAugmenter(crop_only, seed=3).shared_view(x)
    assert not torch.equal(ref, x.float() / 255)          # a real crop happened
    assert torch.equal(v2, ref)
    assert torch.equal(v1, ref.flip(-1))
    # and through forward(), normalised: view 1 is the mirror of view 2
    n1, n2 = TwoViewAugmenter(arm.policy, seed=3)(x)
    assert torch.allclose(n1, n2.flip(-1), atol=1e-6)


@pytest.mark.parametrize("arms_yaml", [
    "arms: {drop_one: true}",
    "arms: {pairwise: {}}",
    "arms: {pairwise: {ordered: false, ops: [crop, color, rotate]}}",
    "arms: {sweep: {op: color_jitter, param: s, values: [0, 0.25, 0.5, 1.0]}}",
    "arms: {named: {a: digits, b: digits_rotation}}",
])
def test_no_generator_makes_two_arms_with_the_same_policy(tmp_path, arms_yaml):
    spec = load_spec(spec_file(tmp_path, "base_policy: simclr_cifar\n" + arms_yaml))
    arms = generate_arms(spec)
    keys = [(a.policy.shared, a.policy.views) for a in arms]
    assert len(set(keys)) == len(keys) > 1


def test_a_repeated_policy_is_refused_with_both_arm_names(tmp_path):
    path = spec_file(tmp_path, "base_policy: simclr_cifar\narms: {drop_one: true, named: {same: simclr_cifar}}\n")
    with pytest.raises(ConfigError, match="'same' is the same policy as 'base'"):
        load_spec(path)


def test_paired_statistics_match_scipy():
    from scipy import stats as sps
    from simclr.ablate.stats import paired
    arm = {0: 0.40, 1: 0.43, 2: 0.38, 3: 0.45, 4: 0.41}
    ref = {0: 0.39, 1: 0.40, 2: 0.385, 3: 0.41, 4: 0.40, 9: 0.5}   # seed 9 has no partner: ignored
    p = paired(arm, ref)
    d = [arm[s] - ref[s] for s in range(5)]
    ci = sps.t.interval(0.95, 4, loc=np.mean(d), scale=sps.sem(d))
    assert p["seeds"] == 5 and p["mean"] == pytest.approx(np.mean(d))
    assert (p["ci_low"], p["ci_high"]) == pytest.approx(ci)
    assert p["same_sign"] == 4 and p["excludes_zero"] == (sps.ttest_rel([arm[s] for s in range(5)],
                                                                         [ref[s] for s in range(5)]).pvalue < 0.05)


def _correlated_hits(rng, n, p_ref=0.35, flip=0.15, gain=0.02):
    """Per-image top-1 correctness of a reference and an arm that agree on most images (as two arms on the
    same test images do): the arm flips a fraction of the reference's outcomes, a little more often to right."""
    ref = rng.random(n) < p_ref
    flips = rng.random(n) < flip
    arm = np.where(flips, rng.random(n) < p_ref + gain / flip, ref)
    return arm, ref


def test_test_sampling_se_matches_numpy_and_a_paired_bootstrap_over_test_images():
    from simclr.ablate.stats import paired, test_sampling
    rng = np.random.default_rng(0)
    n, seeds = 2000, [0, 1, 2]
    hits = {s: _correlated_hits(rng, n) for s in seeds}
    arm = {s: ("h", hits[s][0]) for s in seeds}
    ref = {s: ("h", hits[s][1]) for s in seeds}
    p = paired({s: hits[s][0].mean() for s in seeds}, {s: hits[s][1].mean() for s in seeds})
    t = test_sampling(arm, ref, p)
    d = np.array([hits[s][0].astype(float) - hits[s][1] for s in seeds])                   # (S, n)
    assert t["se"] == pytest.approx(np.std(d.mean(axis=0), ddof=1) / np.sqrt(n), rel=1e-12)
    within = sum(np.var(d[i] - d.mean(axis=0), ddof=1) / n for i in range(len(seeds))) / (len(seeds) - 1)
    assert t["share"] == pytest.approx(within / p["std"] ** 2, rel=1e-12)
    assert (t["low"], t["high"]) == pytest.approx((p["mean"] - 1.96 * t["se"], p["mean"] + 1.96 * t["se"]))
    assert t["floor"] == pytest.approx((1.959964 + 0.841621) * t["se"], rel=1e-5)
    # these seeds' images are independent draws: then it matches the per-seed combination and a bootstrap that
    # redraws each seed's images on its own
    se_s = [np.std(d[i], ddof=1) / np.sqrt(n) for i in range(len(seeds))]
    assert t["se"] == pytest.approx(np.sqrt(np.sum(np.square(se_s))) / len(seeds), rel=0.1)
    boot = [np.mean([(lambda i: hits[s][0][i].mean() - hits[s][1][i].mean())(rng.integers(0, n, n)) for s in seeds])
            for _ in range(600)]
    assert np.std(boot) == pytest.approx(t["se"], rel=0.12)
    # unpaired binomial SEs would overstate it: the arms agree on most images
    assert t["se"] < np.sqrt(sum(2 * 0.35 * 0.65 / n for _ in seeds)) / len(seeds) / 2
    # another test set, or a seed without per-image records: no number
    assert test_sampling({**arm, 1: ("other", arm[1][1])}, ref, p) is None
    assert test_sampling({0: arm[0], 2: arm[2]}, ref, p) is None and test_sampling(arm, ref, None) is None


def test_test_sampling_of_seeds_that_share_their_test_images():
    """Seeds of a study test on the same images, and the images that favour one arm favour it on every seed:
    the error of the mean difference does not shrink with seeds. Only sd_i(mean_s d_s,i)/sqrt(n) matches a
    bootstrap that redraws the shared images; the per-seed combination sqrt(sum SE_s^2)/S is far too small."""
    from simclr.ablate.stats import paired, test_sampling
    rng = np.random.default_rng(1)
    n, seeds = 2000, list(range(9))
    ref_hits, flip = _correlated_hits(rng, n, gain=0.004)     # one test set: which images the arms disagree on
    gain = ref_hits != flip                                   # images where the arm differs from the reference
    hits = {s: (np.where(gain & (rng.random(n) < 0.9), flip, ref_hits), ref_hits) for s in seeds}
    arm = {s: ("h", hits[s][0]) for s in seeds}
    ref = {s: ("h", hits[s][1]) for s in seeds}
    p = paired({s: hits[s][0].mean() for s in seeds}, {s: hits[s][1].mean() for s in seeds})
    t = test_sampling(arm, ref, p)
    shared = [np.mean([hits[s][0][i].mean() - hits[s][1][i].mean() for s in seeds])
              for i in (rng.integers(0, n, n) for _ in range(400))]
    assert np.std(shared) == pytest.approx(t["se"], rel=0.15)
    per_seed_combined = np.sqrt(sum(np.var(hits[s][0].astype(float) - hits[s][1], ddof=1) / n for s in seeds)) / len(seeds)
    assert t["se"] > 2 * per_seed_combined
    # the seeds' own spread misses most of it: the verdict must not call the difference resolved on seeds alone
    from simclr.ablate.power import verdict
    assert p["excludes_zero"] and t["se"] > p["std"] / np.sqrt(len(seeds))
    assert t["low"] <= 0 <= t["high"] and verdict(p, t).startswith("within test-sampling error"), (p, t)
    assert verdict(p) == "resolved"   # what the seeds alone would have said


def test_report_separates_test_sampling_from_seed_variance(tmp_path, capsys):
    """Runs with per-image records get a test-sampling column; runs without (older results) get '–'."""
    import csv

    from simclr.evaluate.records import binomial_se, per_image_record
    rng = np.random.default_rng(1)
    root, labels = tmp_path / "abl", np.arange(1000) % 10
    runs = []
    for seed in range(3):
        arm, ref = _correlated_hits(rng, 1000)
        for name, hits in (("base", ref), ("crop", arm), ("older", arm)):
            run = root / "runs" / f"{name}-seed{seed}"
            run.mkdir(parents=True)
            top1 = float(hits.mean())
            record = {"metrics": {"simclr": {"knn_k20": {"top1": top1, "top1_se": binomial_se(top1, 1000),
                                                         "top5": 0.9}}}}
            if name != "older":
                record["per_image"] = per_image_record({"simclr": {"knn_k20": hits}}, labels)
            (run / "results.json").write_text(json.dumps(record))
            (run / "arm.json").write_text(json.dumps({"arm": name, "kind": "named", "seed": seed, "meta": {},
                                                      "results": "results.json"}))
            runs.append({"key": run.name})
    (root / "plan.json").write_text(json.dumps({"reference": "base", "runs": runs}))
    assert main(["ablate", "report", str(root)]) == 0
    md = (root / "results.md").read_text()
    assert "test-sampling ±1.96·SE" in md and "var_test / var_seed" in md
    row = next(line for line in md.splitlines() if line.startswith("| crop | knn_k20/top1 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[4].startswith("±") and float(cells[5]) > 0 and cells[6].endswith("%")
    assert "| older | knn_k20/top1 |" in md and md.split("| older | knn_k20/top1 |")[1].splitlines()[0].endswith(
        "| – | – | – |")
    rows = {r["arm"]: r for r in json.loads((root / "results.json").read_text())["rows"]
            if r["metric"] == "knn_k20/top1"}
    assert rows["crop"]["vs_reference_test"]["images"] == 1000 and rows["older"]["vs_reference_test"] is None
    with open(root / "results.csv") as fh:
        flat = {r["arm"]: r for r in csv.DictReader(fh) if r["metric"] == "knn_k20/top1"}
    assert float(flat["crop"]["d_ref_test_se"]) == pytest.approx(rows["crop"]["vs_reference_test"]["se"])
    assert flat["older"]["d_ref_test_se"] == ""


def test_drop_one_and_sweep_arms(tmp_path):
    spec = load_spec(spec_file(tmp_path, """
        base_policy: simclr_cifar
        arms:
          drop_one: true
          sweep: {op: color_jitter, param: s, values: [0, 0.25, 0.5, 1.0]}
        """))
    names = [a.name for a in generate_arms(spec)]
    # s=0.5 is the base policy itself: not a second arm, the base arm is that sweep point
    assert names == ["base", "drop-random_resized_crop", "drop-horizontal_flip", "drop-color_jitter",
                     "drop-grayscale", "color_jitter.s=0", "color_jitter.s=0.25", "color_jitter.s=1"]
    assert generate_arms(spec)[0].meta == {"value": 0.5, "param": "color_jitter.s"}


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
    # each evaluation stored its per-image top-1 correctness: it unpacks to the top-1 it stored
    from simclr.ablate.records import read_arm_record, read_results
    record = read_results(read_arm_record(root / "runs" / "plain-seed0" / "arm.json")["results"])
    assert record["per_image"]["images"] == len(record["correct"]["simclr"]["knn_k20"])
    for encoder, protocols in record["correct"].items():
        for protocol, hits in protocols.items():
            assert hits.mean() == pytest.approx(record["metrics"][encoder][protocol]["top1"], abs=1e-12)
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


def test_selection_protocol_stores_the_search_objectives_per_run(tmp_path):
    import csv

    from simclr.evaluate.proxies import selection_metrics
    path = spec_file(tmp_path, """
        overrides: [trainer.max_epochs=1, trainer.progress_bar=false, data.val_per_class=5]
        seeds: [0]
        protocols: [knn, selection]
        arms:
          named:
            plain: augment_policies/digits.yaml
        """)
    assert main(["ablate", str(path)]) == 0
    run_dir = tmp_path / "t" / "runs" / "plain-seed0"
    stored = json.loads((run_dir / "selection.json").read_text())
    assert json.loads((run_dir / "arm.json").read_text())["selection"] == "selection.json"
    fresh = selection_metrics(run_dir)  # recomputed independently: same encoder, splits and seeds
    for key in ("knn_val_top1", "rankme", "rotation_acc"):
        assert stored[key] == pytest.approx(fresh[key], abs=1e-6), key
    rows = list(csv.DictReader(open(tmp_path / "t" / "selection.csv")))
    test = json.loads(next((run_dir / "eval").glob("*/results.json")).read_text())["metrics"]["simclr"]
    knn = next(k for k in test if k.startswith("knn_"))
    assert [r["arm"] for r in rows] == ["plain"]
    assert float(rows[0]["rankme"]) == pytest.approx(stored["rankme"])
    assert float(rows[0][f"{knn}/top1"]) == pytest.approx(test[knn]["top1"])


def test_unknown_protocol_error_lists_selection(tmp_path):
    path = spec_file(tmp_path, "arms: {drop_one: true}\nprotocols: [selectoin]\n")
    with pytest.raises(ConfigError, match="protocols\\[0\\]: unknown 'selectoin'. Did you mean 'selection'"):
        load_spec(path)


def _precision_asked(tmp_path, monkeypatch):
    """A one-arm spec whose runs stop before training; `asked` collects the trainer config each run asks for."""
    path = spec_file(tmp_path, """
        overrides: [trainer.max_epochs=1, trainer.progress_bar=false]
        seeds: [0]
        protocols: [knn]
        arms: {named: {plain: augment_policies/digits.yaml}}
        """)
    asked = []

    def no_training(cfg=None, **_):
        asked.append(cfg.trainer)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.train, "run", no_training)
    return path, asked


def test_a_study_recorded_before_auto_precision_keeps_running_its_arms_at_the_recorded_precision(
        tmp_path, monkeypatch):
    """Its config.yaml files and spec.resolved.yaml hold precision '32' / channels_last false: the arms still to
    run must not switch to bf16 because the spec's base config now says auto, or the arms stop being comparable."""
    import yaml

    from simclr.ablate.store import RECORD
    path, asked = _precision_asked(tmp_path, monkeypatch)
    assert main(["ablate", str(path)]) == 130  # a new study: the arm asks for auto
    assert (asked[-1].precision, asked[-1].channels_last) == ("auto", "auto")
    record = tmp_path / "t" / RECORD
    old = yaml.safe_load(record.read_text())
    old["base_config"]["trainer"].update(precision="32", channels_last=False)  # as simclr wrote it before auto
    record.write_text(yaml.safe_dump(old, sort_keys=True))
    assert main(["ablate", str(path)]) == 130  # not refused as an edited spec ...
    assert (asked[-1].precision, asked[-1].channels_last) == ("32", False)  # ... and fp32 as it started


def test_a_study_begun_under_auto_runs_its_remaining_arms_at_its_first_runs_precision(tmp_path, monkeypatch):
    """Arms resumed on another machine (a CPU without bf16, another SLURM node) must not resolve `auto` to a
    different precision from the study's first runs: the first run's config.yaml pins the rest."""
    import yaml

    path, asked = _precision_asked(tmp_path, monkeypatch)
    assert main(["ablate", str(path)]) == 130
    assert (asked[-1].precision, asked[-1].channels_last) == ("auto", "auto")
    first = tmp_path / "t" / "runs" / "earlier-seed0"   # a run that trained on a machine with native bf16
    first.mkdir(parents=True)
    (first / "config.yaml").write_text(yaml.safe_dump({"trainer": {"precision": "bf16-mixed", "channels_last": True}}))
    assert main(["ablate", str(path)]) == 130
    assert (asked[-1].precision, asked[-1].channels_last) == ("bf16-mixed", True)
