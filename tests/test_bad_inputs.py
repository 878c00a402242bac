"""Bad input -> exit code 2, one line naming the key or file, and nothing created or changed on disk.

Each case is one row: an id, a setup that writes what the user would have on disk and returns the CLI
arguments, and a fragment the error must contain. The next bad input found is one row to add.
"""
import gzip
import json
import logging
import os
import pickle
import shutil
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr.cli import main
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp, *extra):
    return ["pretrain", *TINY, f"output_dir={tmp / 'runs'}", *extra]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def idx_files(folder: Path, n_images: int, labels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(bytes([0, 0, 8, 3]) + struct.pack(">iii", n_images, 8, 8) + bytes(n_images * 64))
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(bytes([0, 0, 8, 1]) + struct.pack(">i", len(labels)) + bytes(labels))
    return folder


def image_tree(root: Path, layout: dict[str, dict[str, int]], side=lambda split: 8) -> Path:
    """layout: split -> class -> number of images (0 = an empty class folder)."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                s = side(split)
                Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def policy(tmp, text: str) -> str:
    return f"policy={write(tmp / 'p.yaml', text)}"


def spec(tmp, arms: str, name="t") -> Path:
    return write(tmp / "spec.yaml", f"name: {name}\nbase_config: {REPO / 'configs/digits_cpu.yaml'}\n"
                                     f"output_dir: {tmp / 'abl'}\n{arms}\n")


class Evil:
    """A checkpoint that runs code if unpickled: it creates a file, which the nothing-changed check catches
    (printing a marker could not fail the test: nothing reads stdout)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished_run(trained_run):
    return trained_run


def copy_run(tmp, run, edit=None, command="resume"):
    dst = shutil.copytree(run, tmp / "run")
    if edit:
        edit(dst)
    if command == "export":
        return ["export", str(dst), "--format", "state_dict", "--out", str(tmp / "out"), "--force"]
    return ["pretrain", "--resume", str(dst)] if command == "resume" else ["evaluate", str(dst), "--no-baselines"]


def edit_csv_header(run):
    (run / "results.csv").write_text("when,what\n1,2\n")


def link_csv_outside(run):
    (run.parent / "elsewhere.csv").write_text("")
    (run / "results.csv").symlink_to(run.parent / "elsewhere.csv")


def widen_checkpoint(run):
    """A checkpoint of another run (another width) copied over this run's last.ckpt."""
    import torch
    blob = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    blob["hyper_parameters"]["config"]["model"]["width"] = 16
    for name in ("last.ckpt", "best.ckpt"):
        torch.save(blob, run / "checkpoints" / name)


def make_out_dir(run):
    (run.parent / "out").mkdir()


def edit_config(run):
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 0.5", "lr: 0.3"))


def trained_elsewhere(run):
    """run.json as a live process (here: the one that started pytest) writes it while it trains the run."""
    import json
    import os
    import socket

    from simclr.utils import pid_start_ticks
    record = json.loads((run / "run.json").read_text())
    record.update(status="running", process={"host": socket.gethostname(), "pid": os.getppid(),
                                             "pid_start": pid_start_ticks(os.getppid())})
    (run / "run.json").write_text(json.dumps(record))


def edit_workers(run):
    cfg = run / "config.yaml"
    assert "num_workers: null" in cfg.read_text()
    cfg.write_text(cfg.read_text().replace("num_workers: null", "num_workers: 7"))


def damage_status(run):
    (run / "run.json").write_text("[1, 2]")


def dangle_status(run):
    (run / "run.json").unlink()
    (run / "run.json").symlink_to(run / "gone.json")


def truncate(run):
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])


def malicious(run):
    (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps(Evil(run / "UNPICKLED")))
    (run / "checkpoints" / "best.ckpt").write_bytes(pickle.dumps(Evil(run / "UNPICKLED")))


def prior_ablation(tmp):
    """An ablation directory that ran a 1-arm spec; the user then edits the spec and reruns."""
    from simclr.ablate.runner import ablation_dir
    from simclr.ablate.arms import generate_arms
    from simclr.ablate.spec import load_spec
    from simclr.ablate.store import claim, resolved_record
    first = spec(tmp, "arms:\n  named: {plain: augment_policies/digits.yaml}")
    loaded = load_spec(first)
    claim(ablation_dir(loaded), resolved_record(loaded, generate_arms(loaded)), first, new_dir=False)
    return ["ablate", str(spec(tmp, "arms:\n  named: {plain: augment_policies/digits_rotation.yaml}"))]


HELD = []  # study locks the rows below hold, as a running launch would; released after each test


def hold(root: Path, command: str) -> None:
    from simclr.ablate.lock import study_lock
    HELD.append(study_lock(root, command, ""))
    HELD[-1].__enter__()


@pytest.fixture(autouse=True)
def release_held_locks():
    yield
    while HELD:
        HELD.pop().__exit__(None, None, None)


def ablation_running(tmp):
    """The same spec, launched a moment ago and still running (here this process holds its lock, as that launch's
    would: flock locks of one file conflict between two opens in one process too)."""
    from simclr.ablate.runner import ablation_dir
    from simclr.ablate.arms import generate_arms
    from simclr.ablate.spec import load_spec
    from simclr.ablate.store import claim, resolved_record
    path = spec(tmp, "arms:\n  named: {plain: augment_policies/digits.yaml}")
    loaded = load_spec(path)
    root = claim(ablation_dir(loaded), resolved_record(loaded, generate_arms(loaded)), path, new_dir=False)
    hold(root, f"simclr ablate {path}")
    return ["ablate", str(path), "--launcher", "local"]


def search_running(tmp):
    """A search of the same spec, running (its study prepared, its lock held)."""
    from simclr.search.study import prepare
    from simclr.search.spec import load_search_spec
    path = write(tmp / "search.yaml", f"name: s\nbase_config: {REPO / 'configs/digits_cpu.yaml'}\n"
                                      f"output_dir: {tmp / 'out'}\nspace: {{rotation: {{toggle: true}}}}\n")
    hold(prepare(load_search_spec(path), path), f"simclr search {path}")
    return ["search", str(path)]


def victim_arm(tmp):
    write(tmp / "victim.yaml", "precious\n")
    return ["ablate", str(spec(tmp, "arms:\n  named: {'../../victim': augment_policies/digits.yaml}"))]


DIRECTORY = object()  # study(): make this path a folder
ARM = '{"arm": "base", "kind": "base", "seed": 0, "meta": {}, "results": "results.json"}'
STUDY = {"plan.json": '{"reference": "base", "runs": [{"key": "base-seed0"}]}',
         "runs/base-seed0/arm.json": ARM,
         "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 0.5}}}}'}


def study(command: str, damage: dict, *options: str):
    """A one-run ablation directory (valid: see test_the_damaged_studies_start_from_a_valid_one) with files
    replaced (`damage`: path -> text or bytes; None: no such file)."""
    def setup(tmp):
        files = {**STUDY, **damage}
        for name, text in files.items():
            if text is DIRECTORY:
                (tmp / "abl" / name).mkdir(parents=True)
            elif text is not None:
                (tmp / "abl" / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / "abl" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["ablate", command, str(tmp / "abl"), *options]
    return setup


CASES = [
    # names that become paths
    ("run name escapes output_dir", lambda t: tiny(t, "name=../x"), "command-line override name: '../x'"),
    ("run name with non-ASCII letters", lambda t: tiny(t, "name=réseau"),
     "name: 'réseau' is not a valid name; it becomes a folder name on every filesystem and cluster it may go to, so "
     "use ASCII letters (A-Z, a-z)"),
    ("run name with separator", lambda t: tiny(t, "name=a/b"), "name: 'a/b' is not a valid name"),
    ("arm name escapes the ablation", victim_arm, "arms.named.../../victim: '../../victim' is not a valid name"),
    ("spec name escapes output_dir", lambda t: ["ablate", str(spec(t, "arms: {drop_one: true}", "../evil"))],
     "name: '../evil' is not a valid name"),
    # YAML files
    ("config is a YAML list", lambda t: ["pretrain", "--config", str(write(t / "c.yaml", "- a\n- b\n"))],
     "c.yaml: a run config is a mapping"),
    ("config repeats a key", lambda t: ["pretrain", "--config", str(write(t / "c.yaml", "seed: 1\nseed: 2\n"))],
     "c.yaml: line 2: key 'seed' appears twice"),
    ("policy repeats a key", lambda t: tiny(t, policy(t, "ops: [horizontal_flip]\nops: [grayscale]")),
     "p.yaml: line 2: key 'ops' appears twice"),
    ("spec repeats a seed", lambda t: ["ablate", str(spec(t, "seeds: [0, 0]\narms: {drop_one: true}"))],
     "seeds: [0] listed more than once"),
    ("spec override escapes", lambda t: ["ablate", str(spec(t, "overrides: [name=../../pwn]\narms: {drop_one: true}"))],
     "spec.yaml: overrides[0]: 'name=../../pwn' would be replaced in every run by each arm's run folder"),
    ("spec overrides the seed the runner sets", lambda t: ["ablate", str(spec(t, "overrides: [seed=3]\narms: {drop_one: true}"))],
     "overrides[0]: 'seed=3' would be replaced in every run by the spec's `seeds`"),
    ("spec overrides output_dir", lambda t: ["ablate", str(spec(t, "overrides: [output_dir=x]\narms: {drop_one: true}"))],
     "overrides[0]: 'output_dir=x' would be replaced in every run by the spec's `output_dir`"),
    ("spec overrides the policy of named arms", lambda t: ["ablate", str(spec(
        t, "overrides: [policy=digits_rotation]\narms:\n  named: {plain: augment_policies/digits.yaml}"))],
     "overrides[0]: 'policy=digits_rotation' would be ignored: each named arm runs its own policy file"),
    ("spec overrides the policy beside base_policy", lambda t: ["ablate", str(spec(
        t, "base_policy: digits\noverrides: [policy=digits_rotation]\narms: {drop_one: true}"))],
     "overrides[0]: 'policy=digits_rotation' would be ignored: `base_policy:` is what generated arms start from"),
    ("protocol misspelt before training", lambda t: [*tiny(t), "--evaluate", "knn,svm"],
     "--evaluate: unknown protocol 'svm'; valid: knn, linear, diagnostics"),
    ("spec whose data is missing", lambda t: ["ablate", str(spec(t, "overrides: [data.name=cifar10, data.path=/nowhere/cifar]"
                                                                  "\narms: {drop_one: true}"))],
     "spec.yaml: data.path: /nowhere/cifar not found"),
    ("spec whose base_config is missing", lambda t: ["ablate", str(write(t / "specs" / "a.yaml", "name: a\nbase_config: "
                                                                         "../configs/none.yaml\narms: {drop_one: true}\n"))],
     "a.yaml: base_config: '../configs/none.yaml' not found: looked for the run config at "),
    ("spec whose base_config is relative to the working directory", lambda t: [
        "ablate", str(write(t / "specs" / "a.yaml", "name: a\nbase_config: configs/digits_cpu.yaml\narms: {drop_one: true}\n"))],
     "specs/configs/digits_cpu.yaml (a relative base_config is relative to the spec's folder"),
    ("search spec whose base_config is missing", lambda t: ["search", str(write(t / "specs" / "s.yaml", "name: s\nbase_config: "
                                                                                "none.yaml\nspace: {rotation: {toggle: true}}\n"))],
     "s.yaml: base_config: 'none.yaml' not found: looked for the run config at "),
    ("spec repeats an arm", lambda t: ["ablate", str(spec(t, "arms:\n  named:\n    a: digits\n    a: digits"))],
     "key 'a' appears twice"),
    ("policy path missing, shipped name alike", lambda t: tiny(t, f"policy={t / 'mine' / 'digits.yaml'}"),
     "mine/digits.yaml' not found"),
    ("policy path is a directory", lambda t: tiny(t, f"policy={t}"), "is a directory; give a policy YAML file"),
    ("zero-area crop", lambda t: tiny(t, policy(t, "ops: [{random_resized_crop: {scale: [0, 1]}}]")),
     "ops[0].scale: min 0.0 must be > 0"),
    # config values
    ("projection head of 10**11 units", lambda t: tiny(t, "model.head_hidden_dim=100000000000"),
     "model.head_hidden_dim: 100000000000 is out of range; allowed [1, 65536]"),
    ("policy grid of no images", lambda t: ["policy", "show", "digits", "--n", "0", "--out", str(t / "g.png")],
     "--n: 0 is out of range; give an integer in [1, 64]"),
    ("policy grid of negative views", lambda t: ["policy", "show", "digits", "--views", "-2", "--out", str(t / "g.png")],
     "--views: -2 is out of range"),
    ("policy grid to an unknown format", lambda t: ["policy", "show", "digits", "--out", str(t / "g.xyz")],
     "g.xyz' is not an image file matplotlib writes; end it in .png"),
    ("evaluate into a results.csv with another header", "finished:edit_csv_header:evaluate",
     "results.csv: its header is ['when', 'what'] but simclr writes"),
    ("evaluate through a symlinked results.csv", "finished:link_csv_outside:evaluate",
     "results.csv: is a link or not a file"),
    ("evaluate a checkpoint copied in from another architecture", "finished:widen_checkpoint:evaluate",
     "not this run's checkpoint (width: 16 in the checkpoint, 8 in config.yaml)"),
    ("export onto a folder with --force", "finished:make_out_dir:export",
     "is a folder or a dangling link; give a file name such as"),
    ("warm-up of inf epochs", lambda t: tiny(t, "optim.warmup_epochs=inf"), "optim.warmup_epochs: inf is not allowed"),
    ("override blamed on the file", lambda t: ["pretrain", "--config", str(REPO / "configs/digits_cpu.yaml"),
                                               f"output_dir={t / 'runs'}", "optim.lr=fast"],
     "command-line override optim.lr: expected a number"),
    ("output_dir under a file", lambda t: tiny(write(t / "file", "x"), f"output_dir={t / 'file' / 'runs'}"),
     "output_dir: "),
    ("colour policy on grayscale data", lambda t: tiny(t, "policy=simclr_cifar"),
     "normalize.mean has 3 values but the images have 1 channel"),
    # data
    ("IDX label out of range", lambda t: tiny(t, "data.name=fashion_mnist", f"data.path={idx_files(t / 'idx', 20, [12] * 20)}"),
     "train-labels-idx1-ubyte.gz: label 12 is out of range"),
    ("IDX count mismatch", lambda t: tiny(t, "data.name=fashion_mnist", f"data.path={idx_files(t / 'idx', 20, [1] * 19)}"),
     "has 20 images but"),
    ("train_per_class beyond the data", lambda t: tiny(t, "data.train_per_class=500"),
     "data.train_per_class: 500 requested but class"),
    ("class only in test", lambda t: tiny(t, "data.name=imagefolder", "data.image_size=null", "data.val_per_class=0",
                                          "data.test_per_class=null", "data.batch_size=2", "trainer.knn_monitor_every=0",
                                          f"data.path={image_tree(t / 'img', {'train': {'a': 3}, 'test': {'a': 2, 'b': 2}})}",
                                          f"data.cache_dir={t / 'cache'}"),
     "only in test: ['b']"),
    ("test images of another size", lambda t: tiny(t, "data.name=imagefolder", "data.image_size=null", "data.val_per_class=0",
                                                   "data.test_per_class=null", "data.batch_size=2",
                                                   f"data.path={image_tree(t / 'img', {'train': {'a': 3}, 'test': {'a': 2}}, lambda s: 8 if s == 'train' else 10)}",
                                                   f"data.cache_dir={t / 'cache'}"),
     "test images are (3, 10, 10)"),
    ("flat tree with nothing held out", lambda t: tiny(t, "data.name=imagefolder", "data.image_size=null",
                                                       "data.val_per_class=0", "data.test_per_class=null",
                                                       "data.batch_size=2", "data.holdout_fraction=0",
                                                       f"data.path={image_tree(t / 'img', {'': {'a': 6, 'b': 6}})}",
                                                       f"data.cache_dir={t / 'cache'}"),
     "data.holdout_fraction=0 holds none out, so the training images would be the test set; set "
     "data.holdout_fraction in (0, 0.9]"),
    ("flat tree with a class too small to hold one out", lambda t: tiny(
        t, "data.name=imagefolder", "data.image_size=null", "data.val_per_class=0", "data.test_per_class=null",
        "data.batch_size=2", f"data.path={image_tree(t / 'img', {'': {'a': 6, 'b': 3}})}", f"data.cache_dir={t / 'cache'}"),
     "class 'b' has 3 image(s), too few to hold any out as its test split at data.holdout_fraction=0.2"),
    ("held-out fraction for a tree with its own test split", lambda t: tiny(
        t, "data.name=imagefolder", "data.image_size=null", "data.val_per_class=0", "data.test_per_class=null",
        "data.batch_size=2", "data.holdout_fraction=0.3", f"data.cache_dir={t / 'cache'}",
        f"data.path={image_tree(t / 'img', {'train': {'a': 3}, 'test': {'a': 2}})}"),
     "data.holdout_fraction: 0.3 would be ignored"),
    ("held-out fraction for a dataset with a fixed test split", lambda t: tiny(t, "data.holdout_fraction=0.3"),
     "data.holdout_fraction: 0.3 would be ignored: it holds out the test split of a flat ImageFolder tree"),
    ("GPU decode of the in-memory loader", lambda t: tiny(t, "data.decode_device=cuda"),
     "data.decode_device: 'cuda' decodes streamed batches (data.loader=stream)"),
    ("decode workers for the in-memory loader", lambda t: tiny(t, "data.num_workers=4"),
     "data.num_workers: 4 would be ignored"),
    ("streamed eval size for the in-memory loader", lambda t: tiny(t, "data.stream_eval_per_class=10"),
     "data.stream_eval_per_class: 10 would be ignored"),
    ("GPU decode on a CPU model", lambda t: tiny(t, "data.name=imagefolder", "data.loader=stream", "data.image_size=8",
                                                 "data.decode_device=cuda", "data.val_per_class=0",
                                                 f"data.path={image_tree(t / 'img', {'train': {'a': 3}})}"),
     "data.decode_device: 'cuda'"),  # no CUDA visible, or (on a GPU machine) trainer.accelerator=cpu
    # resume
    ("resume auto without a config", lambda t: ["pretrain", "--resume", "auto"],
     "--resume auto: give the run's --config (and overrides) as when it started"),
    ("resume auto finds a folder that is no run", lambda t: [*tiny(t), "--resume", "auto"] if (t / "runs" / "tiny").mkdir(
        parents=True) is None else None, "runs/tiny exists but is not a run directory (no config.yaml)"),
    ("resume after config.yaml was edited", "finished:edit_config", "config.yaml: edited after the run started (optim.lr"),
    ("resume after a stream-only key was edited", "finished:edit_workers",
     "config.yaml: edited after the run started (data.num_workers: None -> 7)"),
    ("resume a run another process is training", "finished:trained_elsewhere",
     "is training this run now"),
    ("resume with a damaged run.json", "finished:damage_status",
     "run.json is not the JSON object simclr writes there (damaged or edited); restore it, or move it aside"),
    ("resume with run.json a dangling link", "finished:dangle_status", "run.json is not the JSON object simclr"),
    ("resume from a truncated last.ckpt", "finished:truncate", "last.ckpt: cannot be resumed from"),
    ("resume from a malicious pickle", "finished:malicious", "last.ckpt: cannot be resumed from; it is not a tensors-only"),
    ("evaluate a malicious pickle", "finished:malicious:evaluate", "best.ckpt: cannot be read as a simclr checkpoint"),
    # ablations
    ("ablation rerun with another spec", prior_ablation, "holds results of a different spec"),
    ("ablation launched while a launch of it runs", ablation_running,
     f"(process {os.getpid()} on {socket.gethostname()}, since "),
    ("ablation launched while a launch of it runs: what to do", ablation_running,
     "is running this study now; nothing was changed. Wait for it to end (follow it with `simclr ablate status "),
    ("search launched while a search of it runs", search_running,
     "is running this study now; nothing was changed. Wait for it to end, or add workers with `simclr search "),
    ("status of a truncated plan.json", study("status", {"plan.json": '{"runs": [{"key": "a-'}),
     "plan.json: not readable JSON (Unterminated string starting at, line 1)"),
    ("status of a plan.json without runs", study("status", {"plan.json": '{"reference": "base"}'}),
     "plan.json: not the file simclr writes there (expected a JSON object with runs); `simclr ablate SPEC` writes"),
    ("status of a plan.json with a number as key", study("status", {"plan.json": '{"runs": [{"key": 5}]}'}),
     "plan.json: not an ablation plan"),
    ("report of a truncated results file",
     study("report", {"runs/base-seed0/results.json": '{"metrics": {"simclr"'}),
     "base-seed0/results.json: not readable JSON (Expecting ':' delimiter, line 1); restore it, or move that run's folder"),
    ("report of an empty results object", study("report", {"runs/base-seed0/results.json": "{}"}),
     "base-seed0/results.json: not the file simclr writes there (expected a JSON object with metrics)"),
    ("report of a truncated arm record", study("report", {"runs/base-seed0/arm.json": "{"}),
     "base-seed0/arm.json: not readable JSON"),
    ("status of an arm record that is a list", study("status", {"runs/base-seed0/arm.json": "[]"}),
     "base-seed0/arm.json: not the file simclr writes there (expected a JSON object with arm, kind, seed, meta, results)"),
    ("status of a submissions record that is not text", study("status", {"jobs/base-seed0.json": b"\xff\xfe"}),
     "jobs/base-seed0.json: not readable JSON (not UTF-8 text); restore it, or move it aside"),
    ("status of a run.json that is a list",
     study("status", {"runs/base-seed0/arm.json": None, "runs/base-seed0/run.json": "[1]"}),
     "base-seed0/run.json: not the file simclr writes there"),
    ("report of an arm record with a text seed", study("report", {"runs/base-seed0/arm.json": ARM.replace('0,', '"x",')}),
     "base-seed0/arm.json: seed is 'x', not the int simclr writes there; restore it, or move that run's folder"),
    ("status of an arm record naming its results by a number", study("status", {
        "runs/base-seed0/arm.json": ARM.replace('"results.json"', "5")}), "base-seed0/arm.json: results is 5, not the str"),
    ("report of an accuracy that is a list", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": [0.9]}}}}'}),
     "base-seed0/results.json: metrics.simclr.knn.top1 is [0.9], not the int or finite float simclr writes there"),
    ("report of a plan whose reference is a list", study("report", {
        "plan.json": '{"reference": [1], "runs": [{"key": "base-seed0"}]}'}), "plan.json: reference is [1], not the str"),
    ("status of a local submission without a job id", study("status", {
        "jobs/base-seed0.json": '{"attempts": [{"launcher": "local"}]}'}),
     "jobs/base-seed0.json: attempts[0] is not a submission simclr writes (launcher inline, local with a process id"),
    ("status of a local submission whose job id is not a pid", study("status", {
        "jobs/base-seed0.json": '{"attempts": [{"launcher": "local", "job_id": "abc"}]}'}),
     "jobs/base-seed0.json: attempts[0] is not a submission simclr writes"),
    ("report of an older study's index with a text seed", study("report", {
        "plan.json": None, "runs/base-seed0/arm.json": None, "manifest.json": '{"finished": {"base-seed0": '
        + ARM.replace('0,', '"x",').replace('"results.json"', '"runs/base-seed0/results.json"') + '}}'}),
     "manifest.json: finished.base-seed0.seed is 'x', not the int"),
    ("status of an arm record whose results file is gone", study("status", {"runs/base-seed0/results.json": None}),
     "base-seed0/arm.json: its results file"),
    ("status of an arm record pointing outside its run", study("status", {
        "runs/base-seed0/arm.json": ARM.replace('"results.json"', '"../../plan.json"')}), "lies outside the run folder"),
    ("status of an arm record that is a folder", study("status", {"runs/base-seed0/arm.json": DIRECTORY}),
     "base-seed0/arm.json: cannot be read (Is a directory)"),
    ("report of an accuracy that is true", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 0.5, "top5": true}}}}'}),
     "metrics.simclr.knn.top5 is True, not the int or finite float"),
    ("report of an accuracy that is NaN", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": NaN}}}}'}),
     "metrics.simclr.knn.top1 is nan, not the int or finite float"),
    ("report of a damaged per_image field", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 0.5}}}, "per_image": {"images": 10, '
                                        '"labels_sha256": "ab", "encoders": {"simclr": {"knn": "AA=="}}}}'}),
     "base-seed0/results.json: per_image.encoders.simclr.knn is not 10 packed bits in base64; restore it"),
    ("report of an accuracy above 1", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 1.7}}}}'}),
     "base-seed0/results.json: metrics.simclr.knn.top1 is 1.7, not an accuracy between 0 and 1"),
    ("report of a per_image field from another evaluation", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 0.5}}}, "per_image": {"images": 10, '
                                        '"labels_sha256": "x", "encoders": {"simclr": {"knn": "AAA="}}}}'}),
     "base-seed0/results.json: per_image.encoders.simclr.knn gets 0.0000 of its images right but "
     "metrics.simclr.knn.top1 is 0.5"),
    ("report of a per_image field without a count", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"knn": {"top1": 0.5}}}, "per_image": {"images": "10"}}'}),
     "base-seed0/results.json: per_image.images is '10', not a positive image count"),
    ("report of a results file nested too deeply", study("report", {"runs/base-seed0/results.json": "[" * 100000}),
     "base-seed0/results.json: not readable JSON (nested too deeply)"),
    ("status of a SLURM submission with a job id that is not one", study("status", {
        "jobs/base-seed0.json": '{"attempts": [{"launcher": "slurm", "job_id": "abc"}]}'}),
     "or slurm with a job id such as 123 or 123_4"),
    ("status of a local submission whose pid is a superscript", study("status", {
        "jobs/base-seed0.json": '{"attempts": [{"launcher": "local", "job_id": "\u00b2"}]}'}),
     "jobs/base-seed0.json: attempts[0] is not a submission"),
    ("report with an unknown metric and another reference", study("report", {}, "--reference", "base", "--metric", "x"),
     "--metric: 'x' is not in these results"),
    ("report of a study without accuracies with a metric", study("report", {
        "runs/base-seed0/results.json": '{"metrics": {"simclr": {"diagnostics": {"rankme": 3}}}}'}, "--metric", "x"),
     "--metric: "),
    ("report of a damaged selection.json", study("report", {"runs/base-seed0/selection.json": '{"rankme": '}),
     "base-seed0/selection.json: not readable JSON"),
    ("report of a selection.json with a text objective", study("report", {
        "runs/base-seed0/selection.json": '{"rankme": "high", "rotation_acc": 0.5, "knn_val_top1": null}'}),
     "base-seed0/selection.json: rankme is 'high', not the int or finite float or NoneType"),
    ("report of an older study's damaged index",
     study("report", {"plan.json": None, "runs/base-seed0/arm.json": None, "manifest.json": '{"finished": []}'}),
     "manifest.json: not an ablation index (expected {'finished'"),
]


def _snapshot(root: Path) -> dict:
    """Every path, and each file's size and mtime (a data cache may appear: it is not a result). Links are
    stat'ed themselves: some cases plant dangling ones."""
    return {str(p.relative_to(root)): None if p.is_dir() and not p.is_symlink() else
            (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*") if "cache" not in p.parts}


@pytest.mark.parametrize("setup,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_place_and_changes_nothing(setup, fragment, tmp_path, capsys, request):
    if isinstance(setup, str):  # "finished:<edit>[:evaluate]": a copy of a finished run, the edit, the command
        _, edit, *command = setup.split(":")
        argv = copy_run(tmp_path, request.getfixturevalue("finished_run"), globals()[edit], *command)
    else:
        argv = setup(tmp_path)
    before = _snapshot(tmp_path.parent)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and "weights_only" not in err  # never advise unpickling an untrusted file
    if "different spec" not in fragment:  # that one prints the diff after its line, by design
        assert err.strip().count("\n") == 0, err
    assert _snapshot(tmp_path.parent) == before  # nothing created, changed or overwritten, inside or outside


@pytest.mark.parametrize("command", ["status", "report"])
def test_the_damaged_studies_start_from_a_valid_one(tmp_path, command, capsys):
    """The damage cases above fail on the damage alone: the undamaged study reads and reports."""
    assert main(study(command, {})(tmp_path)) == 0
    assert "base" in capsys.readouterr().out


def test_a_study_without_accuracies_reports_so_and_writes_no_tables(tmp_path, capsys):
    """protocols: [diagnostics] (or selection) only: nothing to tabulate; said in one line, exit 0."""
    argv = study("report", {"runs/base-seed0/results.json": '{"metrics": {"simclr": {"diagnostics": {"rankme": 3}}}}'})
    assert main(argv(tmp_path)) == 0
    assert "no kNN or linear accuracies to tabulate" in capsys.readouterr().out
    assert not list((tmp_path / "abl").glob("results*"))


def test_a_run_whose_eval_folder_is_a_link_to_another_disk_still_reports(tmp_path, capsys):
    """Results reached through a symlinked eval/ folder are the run's own (only the path as written counts)."""
    argv = study("report", {"runs/base-seed0/arm.json": ARM.replace('"results.json"', '"eval/eval-1/results.json"'),
                            "runs/base-seed0/results.json": None})(tmp_path)
    other = tmp_path / "other-disk" / "eval-1"
    other.mkdir(parents=True)
    (other / "results.json").write_text(STUDY["runs/base-seed0/results.json"])
    (tmp_path / "abl" / "runs" / "base-seed0" / "eval").symlink_to(other.parent)
    assert main(argv) == 0 and "base" in capsys.readouterr().out


def test_two_runs_starting_with_one_name_at_once_get_their_own_directories(tmp_path, monkeypatch):
    """The other run took `tiny` between our existence check and our mkdir."""
    import simclr.runs.directory as directory
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    monkeypatch.setattr(directory, "first_free", lambda path_for, start=1: path_for(start))  # a stale check
    assert directory.new_run_dir(tmp_path / "runs", "tiny").name == "tiny-2"


def test_resume_auto_starts_once_then_refuses_other_settings_and_leaves_a_finished_run_alone(tmp_path, capsys,
                                                                                               monkeypatch, caplog):
    """`--resume auto` outside SLURM: nothing at output_dir/name -> a fresh run; that run again (auto, or its
    directory) -> one line saying it finished, exit 0, nothing on disk touched (run.json byte for byte); the
    same name with other settings -> one line naming the differing key, exit 2, nothing touched."""
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    argv = [*tiny(tmp_path, "trainer.max_epochs=1"), "--resume", "auto"]
    assert main(argv) == 0
    run = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]
    record = (run / "run.json").read_bytes()
    assert json.loads(record)["status"] == "finished" and json.loads(record)["metrics"]
    for again in (argv, ["pretrain", "--resume", str(run)]):
        before = _snapshot(tmp_path)
        capsys.readouterr()
        caplog.clear()
        assert main(again) == 0, again
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # the CLI's stderr lines
        assert len(said) == 1 and "\n" not in said[0], said
        assert f"{run}: finished all 1 epochs already" in said[0] and "nothing changed" in said[0], said
        assert "Traceback" not in capsys.readouterr().err
        assert (run / "run.json").read_bytes() == record  # metrics, start and finish times kept
        assert _snapshot(tmp_path) == before
    before = _snapshot(tmp_path)
    assert main([*argv, "optim.lr=0.3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert f"--resume auto: {run} holds a run started with other settings (optim.lr: 0.5 -> 0.3)" in err, err
    assert _snapshot(tmp_path) == before
