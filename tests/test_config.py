"""Run configs: every shipped config loads; every kind of mistake is named by its full dotted key."""
from pathlib import Path

import pytest

from simclr.config.run import RunConfig, load_config
from simclr.config.schema import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_overrides_apply_and_config_is_frozen():
    cfg = load_config(CONFIGS[0], ["trainer.max_epochs=3", "optim.lr=0.5", "policy=simclr_imagenet"])
    assert cfg.trainer.max_epochs == 3 and cfg.optim.lr == 0.5 and cfg.policy == "simclr_imagenet"
    with pytest.raises(Exception):
        cfg.trainer.max_epochs = 4  # frozen dataclass


@pytest.mark.parametrize("override,key,hint", [
    ("trainer.max_epoch=5", "trainer.max_epoch", "Did you mean 'max_epochs'"),
    ("optim.name=lamb", "optim.name", "Valid: adamw, lars, sgd"),
    ("optim.lr=-1", "optim.lr", "out of range"),
    ("data.batch_size=1", "data.batch_size", "allowed [2, inf]"),
    ("trainer.precision=64", "trainer.precision", "not allowed"),
    ("model.backbone=resnet19", "model.backbone", "Did you mean 'resnet18'"),
    ("loss.temperature=0", "loss.temperature", "out of range"),
    ("trainer.accumulate_grad_batches=4", "trainer.accumulate_grad_batches", "fewer negatives"),
    ("data.name=digits", None, None),  # valid: digits needs no path
    ("data.val_per_class=-2", "data.val_per_class", "out of range"),
    ("trainer.channels_last=maybe", "trainer.channels_last", "is not a valid bool | 'auto'"),
    ("seed=1.5", "seed", "expected an integer"),
    ("modle.backbone=resnet18", "modle", "Did you mean 'model'"),
    ("eval.knn_k=[200, 0]", "eval.knn_k[1]", "out of range"),
    ("data.path=null", "data.path", "required for dataset"),
])
def test_config_errors_name_the_dotted_key(override, key, hint):
    if key is None:
        load_config(CONFIGS[0], [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS[0], [override])
    msg = str(err.value)
    assert f"{key}:" in msg and hint in msg, msg


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(CONFIGS[0], ["trainer.max_epochs"])


def test_runs_recorded_with_a_stream_only_key_still_load_but_users_cannot_write_one(tmp_path):
    """Runs recorded before the in-memory loader refused data.num_workers hold its old default (2) in config.yaml
    and in the checkpoint: they still resume and evaluate; the same file given as a new run's config is refused."""
    from simclr.config.run import config_from_dict
    from simclr.config.schema import to_dict

    old = to_dict(load_config(None, ["data.name=digits"]))
    old["data"].update(num_workers=2, stream_eval_per_class=100)
    path = tmp_path / "config.yaml"
    path.write_text(__import__("yaml").safe_dump(old))
    assert load_config(path, stored=True).data.num_workers is None
    assert config_from_dict(old).data.num_workers is None
    with pytest.raises(ConfigError, match=r"data.num_workers: 2 would be ignored"):
        load_config(path)
    streamed = {**old, "data": {**old["data"], "name": "imagefolder", "path": "x", "loader": "stream",
                                "image_size": 8}}
    assert config_from_dict(streamed).data.num_workers == 2  # the streamed loader reads it: kept


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: digits\n  batchsize: 64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: data.batchsize: unknown key. Did you mean 'batch_size'"):
        load_config(bad)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_ablation_specs_load_and_generate_their_arms(path, monkeypatch):
    from simclr.ablate.arms import generate_arms
    from simclr.ablate.spec import load_spec

    monkeypatch.chdir(ROOT)  # arm policy files are relative to the project root, where the docs run the specs
    arms = generate_arms(load_spec(path))
    assert len({a.name for a in arms}) == len(arms) > 0
    if path.stem == "imagenet100_fig5":  # the full ordered Fig. 5 grid: 7 x 7, every cell named once
        assert len(arms) == 49 and {a.name for a in arms} >= {"pair-crop+color", "pair-color+crop", "pair-rotate"}


SHIPPED_SPECS = sorted([*(ROOT / "configs" / "ablations").glob("*.yaml"), *(ROOT / "configs" / "searches").glob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_specs_give_base_config_relative_to_their_own_folder(path, tmp_path, monkeypatch):
    import yaml

    from simclr.config.files import beside_spec

    monkeypatch.chdir(tmp_path)  # anywhere but the project root
    given = yaml.safe_load(path.read_text())["base_config"]
    assert not Path(given).is_absolute() and (path.parent / given).is_file()
    assert Path(beside_spec(path.parent, given, "base_config")).samefile((path.parent / given).resolve())


def test_a_spec_finds_its_base_config_from_any_working_directory(tmp_path, monkeypatch):
    """base_config is relative to the spec's folder: the same spec loads from its folder, the project root or
    elsewhere; the record keeps the path relative to the working directory where it lies under it (as studies
    recorded it before), else absolute."""
    from simclr.search.spec import load_search_spec
    from simclr.ablate.spec import load_spec

    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "base.yaml").write_text((ROOT / "configs" / "digits_cpu.yaml").read_text())
    ablation = project / "specs" / "a.yaml"
    ablation.write_text("name: a\nbase_config: ../base.yaml\narms: {named: {plain: digits}}\n")
    search = project / "specs" / "s.yaml"
    search.write_text("name: s\nbase_config: ../base.yaml\nspace: {rotation: {toggle: true}}\n")
    for cwd, expected in ((project, "base.yaml"), (project / "specs", str(project / "base.yaml")),
                          (tmp_path, "project/base.yaml")):
        monkeypatch.chdir(cwd)
        assert load_spec(ablation).base_config == expected
        assert load_search_spec(search).base_config == expected
    monkeypatch.chdir(tmp_path)
    shipped = load_search_spec(ROOT / "configs" / "searches" / "digits_rotation.yaml")
    assert Path(shipped.base_config) == ROOT / "configs" / "digits_cpu.yaml"


def test_a_run_recorded_with_num_workers_resumes_again_after_its_first_resume(tmp_path, tiny_overrides):
    """Its config.yaml keeps `num_workers: 2`; each resume writes checkpoints recording the config as the run
    was started, so the next resume still finds config.yaml unedited."""
    import pytorch_lightning as pl
    import torch
    import yaml

    from simclr import train
    from simclr.config.run import load_config as load

    class StopAtEpochStart(pl.Callback):
        def __init__(self, epoch):
            self.epoch = epoch

        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == self.epoch:
                raise KeyboardInterrupt  # last.ckpt holds the epochs before

    with pytest.raises(BaseException):
        train.run(load(None, [*tiny_overrides, "trainer.max_epochs=3", "name=old"]), callbacks=[StopAtEpochStart(1)])
    run = tmp_path / "runs" / "old"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["num_workers"] = 2  # as simclr wrote it when that was the default
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = run / "checkpoints" / "last.ckpt"
    blob = torch.load(ckpt, weights_only=False)
    blob["hyper_parameters"]["config"]["data"]["num_workers"] = 2
    torch.save(blob, ckpt)
    with pytest.raises(BaseException):
        train.run(resume=run, callbacks=[StopAtEpochStart(2)])
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["config"]["data"]["num_workers"] == 2
    assert train.run(resume=run).run_dir == run
