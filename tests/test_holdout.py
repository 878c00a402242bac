"""A flat ImageFolder tree (<class>/<image>, no train/ and test/ folders) is tested on a seeded, class-stratified
held-out split that pretraining and the probes never see: on random-noise images every score is at chance."""
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import binom

from simclr.cli import main
from simclr.config.run import load_config
from simclr.data import make_splits
from simclr.data.splits import holdout_indices
from tests.conftest import TINY


def noise_tree(root: pathlib.Path, per_class: dict[str, int], order=None, side=16) -> pathlib.Path:
    """Random-noise PNGs (seeded per file, so the same file name always holds the same pixels), written in
    `order` (a permutation of the files) so that two trees differ only in the order their files were created."""
    files = [(c, i) for c, n in per_class.items() for i in range(n)]
    for k in order if order is not None else range(len(files)):
        c, i = files[k]
        (root / c).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng([ord(c[0]), i]).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / c / f"{i:03d}.png")
    return root


def _data(path, *extra):
    return load_config(None, ["data.name=imagefolder", f"data.path={path}", "data.image_size=16", "data.batch_size=4",
                              "data.val_per_class=2", *extra]).data


class _Listing:
    """What os.scandir returns (an iterator that is also a context manager), over entries in a given order."""

    def __init__(self, entries):
        self._entries = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_held_out_indices_are_disjoint_stratified_by_floor_and_seeded():
    labels = torch.tensor([0] * 13 + [1] * 7 + [2] * 30)[torch.randperm(50, generator=torch.Generator().manual_seed(1))]
    kept, held = holdout_indices(labels, ("a", "b", "c"), 0.2, "tree")
    assert not set(kept.tolist()) & set(held.tolist()) and sorted(kept.tolist() + held.tolist()) == list(range(50))
    assert torch.bincount(labels[held]).tolist() == [2, 1, 6]  # floor(0.2 x 13, 7, 30): never above the fraction
    assert torch.equal(held, holdout_indices(labels, ("a", "b", "c"), 0.2, "tree")[1])
    assert not torch.equal(held, holdout_indices(labels, ("a", "b", "c"), 0.2, "tree", seed=1)[1])
    # each class draws alone: a class added (5 images of a class 'd', at the end) moves no other test image
    more = torch.cat([labels, torch.tensor([3] * 5)])
    grown = holdout_indices(more, ("a", "b", "c", "d"), 0.2, "tree")[1]
    assert torch.equal(grown[:len(held)], held) and torch.bincount(more[grown]).tolist() == [2, 1, 6, 1]


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_the_held_out_images_do_not_depend_on_listing_order_and_never_train(tmp_path, loader, monkeypatch):
    per_class = {"cat": 11, "dog": 9}
    first = noise_tree(tmp_path / "first", per_class)
    reverse = noise_tree(tmp_path / "reverse", per_class, order=range(19, -1, -1))  # created the other way round
    a = make_splits(_data(first, f"data.cache_dir={tmp_path / 'c'}", f"data.loader={loader}"), seed=0)
    # and the file system listing every folder backwards, whatever order it keeps
    listdir, iterdir, scandir = os.listdir, pathlib.Path.iterdir, os.scandir
    monkeypatch.setattr(os, "listdir", lambda p=".": listdir(p)[::-1])
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda p: iter(list(iterdir(p))[::-1]))
    monkeypatch.setattr(os, "scandir", lambda p=".": _Listing(list(scandir(p))[::-1]))
    b = make_splits(_data(reverse, f"data.cache_dir={tmp_path / 'c'}", f"data.loader={loader}"), seed=0)
    assert torch.equal(a["test"].images, b["test"].images) and torch.bincount(a["test"].labels).tolist() == [2, 1]
    assert torch.equal(a["train"].images, b["train"].images) and torch.equal(a["val"].images, b["val"].images)
    assert not _rows(a["test"].images) & (_rows(a["train"].images) | _rows(a["val"].images))
    assert len(a["train"]) + len(a["val"]) + len(a["test"]) == 20
    # the run's seed draws train/val, never the test split (evaluate seed=N cannot move trained images into it)
    c = make_splits(_data(first, f"data.cache_dir={tmp_path / 'c'}", f"data.loader={loader}"), seed=7)
    assert torch.equal(a["test"].images, c["test"].images) and not torch.equal(a["val"].images, c["val"].images)


NOISE = ["policy=simclr_cifar", "data.name=imagefolder", "data.train_per_class=null", "data.test_per_class=null",
         "data.holdout_fraction=0.5", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """2 classes x 150 noise images, flat, half of each class held out; 1 epoch of pretraining through the CLI,
    then `simclr evaluate` with its floors."""
    tmp = tmp_path_factory.mktemp("noise")
    tree = noise_tree(tmp / "noise", {"a": 150, "b": 150})
    assert main(["pretrain", *TINY, f"output_dir={tmp / 'runs'}", *NOISE, f"data.path={tree}",
                 f"data.cache_dir={tmp / 'cache'}"]) == 0
    run = tmp / "runs" / "tiny"
    assert main(["evaluate", str(run)]) == 0
    return run


def test_noise_images_score_at_chance_on_the_held_out_split(noise_run):
    status = json.loads((noise_run / "run.json").read_text())
    results = json.loads((noise_run / "eval" / "eval-1" / "results.json").read_text())
    record = status["test_split"]
    assert record["source"] == "held out of a flat tree" and record["fraction"] == 0.5 and record["n"] == 150
    assert results["settings"]["test_split"] == record and results["settings"]["data"]["holdout_fraction"] == 0.5
    sizes = results["settings"]["data"]["split_sizes"]
    assert sizes == {"train": 140, "val": 10, "test": 150} and results["per_image"]["images"] == 150
    # Every score (4 encoders x 3 protocols) within its binomial interval at chance (0.5) for 150 test images,
    # each at 1 - 0.001/12 so that all 12 together hold with 99.9 %: 0.33 to 0.67. Tested on its own training
    # images, as a flat tree was before, the raw-pixel floor scores ~1.0 (each image finds itself).
    scores = {(enc, p): v["top1"] for enc, protos in results["metrics"].items() for p, v in protos.items()}
    assert len(scores) == 12
    lo, hi = binom.interval(1 - 0.001 / len(scores), 150, 0.5)
    assert lo >= 50 and hi <= 100
    for (encoder, protocol), top1 in scores.items():
        assert lo <= round(top1 * 150) <= hi, (encoder, protocol, top1)


def test_evaluation_cannot_draw_another_held_out_split(noise_run, capsys):
    assert main(["evaluate", str(noise_run), "--no-baselines", "data.holdout_fraction=0.2"]) == 2
    err = capsys.readouterr().err
    assert "data.holdout_fraction: the run held out 0.5" in err and err.strip().count("\n") == 0


def test_a_run_from_before_held_out_splits_is_not_resumed_and_its_scores_say_so(noise_run, tmp_path, capsys):
    """Its run.json records no test_split: it pretrained on every image of the tree."""
    run = shutil.copytree(noise_run, tmp_path / "run", ignore=shutil.ignore_patterns("eval", "results.csv"))
    status = json.loads((run / "run.json").read_text())
    del status["test_split"]
    (run / "run.json").write_text(json.dumps({**status, "status": "interrupted", "epoch": 0}))
    assert main(["pretrain", "--resume", str(run)]) == 2
    assert "no image of it can be a clean test image" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--no-baselines", "--protocol", "knn"]) == 0
    warnings = json.loads((run / "eval" / "eval-1" / "results.json").read_text())["settings"]["warnings"]
    assert any("the encoder has seen these test images" in w for w in warnings)
