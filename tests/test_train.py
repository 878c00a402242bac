"""Pretraining end to end on tiny real data (scikit-learn digits), through the same functions the CLI uses."""
import json

import torch
import pytorch_lightning as pl

from simclr import train
from simclr.cli import main
from simclr.config.run import load_config
from simclr.config.schema import to_dict
from simclr.evaluate.checkpoint import build_encoder, load_run
from simclr.module import SimCLRModule


def test_cli_one_epoch_smoke_and_never_overwrites(tiny_overrides, tmp_path, capsys):
    args = ["pretrain", *tiny_overrides, "trainer.max_epochs=1"]
    assert main(args) == 0
    run = tmp_path / "runs" / "tiny"
    for f in ("config.yaml", "policy.yaml", "run.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
              "csv/part-1/metrics.csv"):
        assert (run / f).exists(), f
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and "monitor/knn_top1" in status["metrics"]
    assert main(args) == 0
    assert (tmp_path / "runs" / "tiny-2" / "checkpoints" / "last.ckpt").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_cli_bad_config_is_one_line_error(tiny_overrides, capsys):
    assert main(["pretrain", *tiny_overrides, "optim.lr=fast"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: expected a number" in err and "Traceback" not in err


def test_loss_falls_on_a_fixed_tiny_batch(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    pl.seed_everything(0)
    module = SimCLRModule(to_dict(cfg), in_channels=1, num_classes=10,
                          policy={"ops": [{"random_resized_crop": {"size": 16, "scale": [0.6, 1.0]}}]})
    x = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8)
    opt = torch.optim.Adam(list(module.encoder.parameters()) + list(module.head.parameters()), lr=1e-3)
    v1, v2 = module.augment(x)  # one fixed pair of views: the tiny batch the loss must fit
    losses = []
    for _ in range(40):
        z1, z2 = module.head(module.encoder(torch.cat([v1, v2]))).chunk(2)
        loss = module.criterion(z1, z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # ~4.1 -> ~2.3 here


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        trainer.should_stop = True


def _weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items()}


def test_interrupted_then_resumed_equals_uninterrupted(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    full = train.run(cfg)
    cut = train.run(load_config(None, [*tiny_overrides, "name=cut"]), callbacks=[StopAfterFirstEpoch()])
    assert json.loads((cut.run_dir / "run.json").read_text())["status"] == "stopped"
    resumed = train.run(resume=cut.run_dir)
    assert resumed.run_dir == cut.run_dir
    a, b = _weights(full.run_dir), _weights(cut.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:  # the augmenter's per-op generator states: the random streams continue exactly
            for row_a, row_b in zip(a[k]["states"], b[k]["states"], strict=True):
                assert all(torch.equal(x, y) for x, y in zip(row_a, row_b, strict=True)), k
    assert abs(full.metrics["train/loss_epoch"] - resumed.metrics["train/loss_epoch"]) < 1e-6
    assert (cut.run_dir / "csv" / "part-1" / "metrics.csv").exists()  # the first segment's log survives
    assert (cut.run_dir / "csv" / "part-2" / "metrics.csv").exists()


def test_checkpoint_loads_back_and_gives_the_same_features(tiny_overrides):
    result = train.run(load_config(None, [*tiny_overrides, "trainer.max_epochs=1"]))
    module = SimCLRModule.load_from_checkpoint(result.last_checkpoint, weights_only=True)
    encoder = build_encoder(load_run(result.run_dir))
    x = torch.rand(8, 1, 16, 16)
    module.eval()
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(module.encoder(x), encoder(x))
    fresh = build_encoder(load_run(result.run_dir), random_init=True)
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(x), encoder(x))


def test_resume_refuses_overrides_and_missing_dirs(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path), "trainer.max_epochs=3"]) == 2
    assert "drop --config and overrides" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_unlabelled_batches_train_without_nan(tiny_overrides):
    """STL-10's unlabeled split has label -1: the online probe must skip them, not turn the loss into NaN."""
    from simclr.data import ImageData, make_splits
    cfg = load_config(None, [*tiny_overrides, "trainer.max_epochs=1", "trainer.knn_monitor_every=0"])
    splits = make_splits(cfg.data, cfg.seed)
    train_data = splits["train"]
    splits["train"] = ImageData(train_data.images, torch.full_like(train_data.labels, -1), train_data.classes)
    result = train.run(cfg, splits=splits)
    loss = result.metrics["train/loss_epoch"]
    assert loss == loss and loss > 0  # not NaN


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_overrides, capsys, caplog):
    result = train.run(load_config(None, [*tiny_overrides, "trainer.max_epochs=1"]))
    files = {p: p.read_bytes() for p in result.run_dir.rglob("*") if p.is_file()}
    with caplog.at_level("WARNING", logger="simclr"):
        assert main(["pretrain", "--resume", str(result.run_dir)]) == 0
    assert [r.getMessage() for r in caplog.records if "nothing to resume" in r.getMessage()] == [
        f"{result.run_dir}: finished all 1 epochs already (run.json); nothing to resume, nothing changed"]
    assert {p: p.read_bytes() for p in result.run_dir.rglob("*") if p.is_file()} == files  # metrics and times kept
    assert "train/loss_epoch = " in capsys.readouterr().out   # the recorded result is still reported
