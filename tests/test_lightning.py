"""Lightning idioms: one optimizer with parameter groups, a per-step schedule sized by the Trainer, loggers
chosen in the config (MLflow read back from a local file store), lr and throughput logged by callbacks."""
import csv
import math

import pytest
import torch

from simclr import train
from simclr.cli import main
from simclr.config.run import load_config
from simclr.config.schema import ConfigError
from simclr.module.optim import warmup_cosine


def _rows(run_dir, part=1):
    with open(run_dir / "csv" / f"part-{part}" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_schedule_follows_limit_train_batches_and_groups_are_named(tiny_overrides):
    """With limit_train_batches=2 and 3 epochs the schedule spans 6 steps (the old one read the full loader)."""
    cfg = load_config(None, [*tiny_overrides, "trainer.max_epochs=3", "trainer.limit_train_batches=2",
                             "trainer.log_every_n_steps=1", "trainer.knn_monitor_every=0", "optim.warmup_epochs=1",
                             "optim.min_lr_ratio=0.1"])
    result = train.run(cfg)
    rows = [r for r in _rows(result.run_dir) if r.get("lr/ssl")]
    ssl = [float(r["lr/ssl"]) for r in rows]
    probe = [float(r["lr/probe"]) for r in rows]
    peak = cfg.optim.lr * cfg.data.batch_size / 256
    factor = warmup_cosine(6, 2, 0.1)
    assert ssl == pytest.approx([peak * factor(s) for s in range(6)])        # one value per optimizer step
    assert probe == pytest.approx([cfg.optim.probe_lr * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])
    assert [float(r["lr/ssl_no_decay"]) for r in rows] == ssl
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert len(state["optimizer_states"]) == 1 and len(state["lr_schedulers"]) == 1
    assert [g["name"] for g in state["optimizer_states"][0]["param_groups"]] == ["ssl", "ssl_no_decay", "probe"]
    assert any(r.get("throughput/img_per_s") for r in _rows(result.run_dir))
    assert "train/loss_epoch" in result.metrics and "train/loss_step" in _rows(result.run_dir)[0]


def test_probe_group_never_moves_the_backbone(tiny_overrides):
    """The probe group sees only the probe; the SSL groups never see the probe."""
    from simclr.config.schema import to_dict
    from simclr.module import SimCLRModule
    from simclr.module.optim import build_optimizer

    cfg = load_config(None, tiny_overrides)
    module = SimCLRModule(to_dict(cfg), 1, 10)
    opt = build_optimizer(cfg.optim, torch.nn.ModuleList([module.encoder, module.head]), 0.1, probe=module.probe)
    ids = {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert ids["probe"] == {id(p) for p in module.probe.parameters()}
    ssl = {id(p) for m in (module.encoder, module.head) for p in m.parameters()}
    assert ids["ssl"] | ids["ssl_no_decay"] == ssl and not ids["ssl"] & ids["ssl_no_decay"]


def test_mlflow_logger_writes_to_a_local_file_store(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.x refuses file stores without it
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    cfg = load_config(None, [*tiny_overrides, "trainer.max_epochs=1", "trainer.loggers=[csv,mlflow]", "trainer.log_every_n_steps=1",
                             f"trainer.logger_args.mlflow.tracking_uri={uri}"])
    result = train.run(cfg)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == result.run_dir.name
    logged = runs[0].data.metrics
    assert logged["train/loss_epoch"] == pytest.approx(result.metrics["train/loss_epoch"])
    assert "lr/ssl" in logged
    assert not (result.run_dir / "tb").exists()  # tensorboard was not asked for


def test_mlflow_default_local_store_works_under_mlflow_3(tiny_overrides, tmp_path, monkeypatch):
    """No tracking_uri anywhere: MLflow 3 refuses its old ./mlruns file store, so simclr's default is an SQLite
    store beside the runs (artifacts beside it too), and nothing lands in the working directory."""
    import importlib.util
    import os
    if importlib.util.find_spec("mlflow") is None and not os.environ.get("CI"):
        pytest.skip("mlflow is not installed (a test extra: pip install mlflow-skinny)")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cfg = load_config(None, [*tiny_overrides, "trainer.max_epochs=1", "trainer.loggers=[mlflow]",
                             "trainer.log_every_n_steps=1", f"output_dir={out}"])
    result = train.run(cfg)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == result.run_dir.name
    assert runs[0].data.metrics["train/loss_epoch"] == pytest.approx(result.metrics["train/loss_epoch"])
    assert experiment.artifact_location == (out / "mlartifacts").as_uri()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no mlruns/ or mlflow.db in the working dir


@pytest.mark.parametrize("override, message", [
    ("trainer.loggers=[csv,tensorbord]", "trainer.loggers[1]: 'tensorbord' is not a logger"),
    ("trainer.logger_args.mlflow.tracking_uri=x", "trainer.logger_args.mlflow: 'mlflow' is not in trainer.loggers"),
])
def test_logger_config_errors_name_the_key(tiny_overrides, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [*tiny_overrides, override])


def test_bad_logger_argument_fails_before_a_run_directory_exists(tiny_overrides, tmp_path, capsys):
    pytest.importorskip("mlflow")
    assert main(["pretrain", *tiny_overrides, "trainer.loggers=[mlflow]",
                 "trainer.logger_args.mlflow.tracking_url=x"]) == 2
    assert "trainer.logger_args.mlflow.tracking_url: not an argument of mlflow" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
