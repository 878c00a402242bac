"""`simclr evaluate` end to end on a tiny real run, and its refusals of bad input."""
import csv
import json

import pytest
import torch

from simclr.cli import main
from simclr.config.run import load_config


@pytest.fixture(scope="module")
def tiny_run(trained_run):
    return trained_run


def test_evaluate_writes_settings_next_to_numbers_and_never_overwrites(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--protocol", "knn,linear,diagnostics", "--plot"]) == 0
    out = capsys.readouterr().out
    assert "random_init" in out and "raw_pixels" in out
    record = json.loads((tiny_run / "eval" / "eval-1" / "results.json").read_text())
    s = record["settings"]
    assert s["knn"]["k"] == [20, 5] and s["knn"]["temperature"] == 0.1 and s["knn"]["metric"] == "cosine"
    assert len(s["checkpoint"]["sha256"]) == 64 and s["package_version"]
    assert s["data"]["split_sizes"] == {"train": 200, "val": 50, "test": 100}
    assert "wd_grid" in s["linear"] and "policy" in s and s["diagnostics"]["invariance_seeds"] == [0, 1, 2]
    m = record["metrics"]
    assert set(m) == {"simclr", "random_init", "random_init_bn", "raw_pixels"}
    assert 0 <= m["simclr"]["knn_k20"]["top1"] <= 1
    # k=20 asks for every image of a class (20 per class here): used as is, and stored
    assert m["simclr"]["knn_k20"]["k"] == 20 and s["knn"]["k_used"] == {"20": 20, "5": 5}
    lin = m["simclr"]["linear"]
    assert lin["wd_searched"][0] < lin["weight_decay"] < lin["wd_searched"][-1] or lin["wd_at_edge"]
    inv = m["simclr"]["diagnostics"]["invariance"]
    assert set(inv) >= {"random_resized_crop", "color_jitter", "rotation"} and "normalize" not in inv
    assert inv["rotation"]["in_policy"] is False and inv["random_resized_crop"]["in_policy"] is True
    assert 0 <= inv["random_resized_crop"]["retrieval"] <= 1 and inv["random_resized_crop"]["draws"] == 3
    # BN statistics recomputed: a different floor from the untouched random init, same weights
    assert m["random_init_bn"]["knn_k20"]["top1"] != m["random_init"]["knn_k20"]["top1"] or \
        m["random_init_bn"]["linear"]["top1"] != m["random_init"]["linear"]["top1"]
    assert (tiny_run / "eval" / "eval-1" / "invariance.png").exists()
    # second evaluation: a new directory, appended CSV rows, feature cache reused
    assert main(["evaluate", str(tiny_run), "--protocol", "knn"]) == 0
    second = json.loads((tiny_run / "eval" / "eval-2" / "results.json").read_text())["settings"]
    assert "knn" in second and "linear" not in second and "diagnostics" not in second  # only settings in effect
    rows = list(csv.DictReader(open(tiny_run / "results.csv")))
    assert {r["eval_dir"].split("/")[-1] for r in rows} == {"eval-1", "eval-2"}
    assert any((tiny_run / "features").glob("*-train.pt"))


def test_raw_pixels_on_digits_match_an_independent_sklearn_knn(tiny_run):
    """The raw-pixel kNN baseline equals scikit-learn's cosine, distance-free vote on the same splits
    at k=1 (where weighting cannot matter)."""
    from sklearn.neighbors import KNeighborsClassifier
    from simclr.augment import eval_preprocess, load_policy
    from simclr.data import make_splits
    from simclr.evaluate import evaluate_run
    res = evaluate_run(tiny_run, ["knn"], overrides=["eval.knn_k=[1]"], quiet=True)
    cfg = load_config(tiny_run / "config.yaml")
    s = make_splits(cfg.data, cfg.seed)
    pre = eval_preprocess(load_policy("digits"))
    xtr, xte = pre(s["train"].images).flatten(1).numpy(), pre(s["test"].images).flatten(1).numpy()
    sk = KNeighborsClassifier(1, metric="cosine", algorithm="brute").fit(xtr, s["train"].labels.numpy())
    assert res["metrics"]["raw_pixels"]["knn_k1"]["top1"] == pytest.approx(sk.score(xte, s["test"].labels.numpy()))


@pytest.mark.parametrize("args,message", [
    (["--protocol", "knn,svm"], "unknown 'svm'"),
    (["eval.knn_k=[5000]"], "eval.knn_k: k=5000 exceeds the 200 labelled training images"),
    (["optim.lr=2"], "only data.*, eval.* and seed"),
    (["data.image_size=12"], "images are 12px but"),
])
def test_evaluate_refuses_bad_settings(tiny_run, capsys, args, message):
    assert main(["evaluate", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupt_truncated_and_foreign_checkpoints(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 100)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, message in ((truncated, "not a tensors-only checkpoint"), (garbage, "not a tensors-only checkpoint"),
                          (foreign, "not a simclr checkpoint"), (tmp_path / "none.ckpt", "no such run directory")):
        assert main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err


def test_checkpoint_from_another_architecture(tiny_run, tmp_path, capsys):
    blob = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    blob["hyper_parameters"]["config"]["model"]["width"] = 16  # claims width 16, holds width-8 weights
    wrong = tmp_path / "wrong.ckpt"
    torch.save(blob, wrong)
    assert main(["evaluate", str(wrong)]) == 2
    assert "do not fit backbone 'small_cnn'" in capsys.readouterr().err


def test_checkpoint_with_nan_weights_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    blob = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(k for k, v in blob["state_dict"].items() if k.startswith("encoder.") and v.ndim == 4)
    blob["state_dict"][name].view(-1)[0] = float("nan")
    damaged = tmp_path / "nan.ckpt"
    torch.save(blob, damaged)
    assert main(["evaluate", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert f"{name.removeprefix('encoder.')} holds NaN or infinite values" in err and "Traceback" not in err
    assert not (tmp_path / "eval-nan").exists()


def test_dataset_with_other_channels_is_refused(tiny_run, tmp_path, capsys):
    root = tmp_path / "tree"
    from PIL import Image
    for split in ("train", "test"):
        for c in "ab":
            (root / split / c).mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(root / split / c / f"{i}.png")
    assert main(["evaluate", str(tiny_run), "--dataset", "imagefolder", "--data", str(root),
                 "data.train_per_class=10", "data.val_per_class=1", "data.test_per_class=5", "eval.knn_k=[3]"]) == 2
    assert "3 channels but the encoder" in capsys.readouterr().err


def test_evaluating_an_interrupted_run_says_so_in_results(tiny_run, tmp_path):
    import shutil
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("eval", "results.csv"))
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished"
    assert main(["evaluate", str(run), "--protocol", "knn", "--no-baselines"]) == 0
    assert json.loads((run / "eval" / "eval-1" / "results.json").read_text())["settings"]["warnings"] == []
    (run / "run.json").write_text(json.dumps({**status, "status": "interrupted", "epoch": 0}))
    assert main(["evaluate", str(run), "--protocol", "knn", "--no-baselines"]) == 0
    warnings = json.loads((run / "eval" / "eval-2" / "results.json").read_text())["settings"]["warnings"]
    assert len(warnings) == 1 and "'interrupted' after 0 of 1 epochs" in warnings[0]
