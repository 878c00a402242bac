"""`trainer.precision=auto` / `trainer.channels_last=auto`: resolved per machine when a run starts, recorded in
config.yaml (the resolved values) and run.json (what was asked and what was used); the loss and evaluation
features stay float32 under bf16-mixed."""
import json

import pytest
import pytorch_lightning as pl
import torch
import yaml

from simclr import train
from simclr.module import devices
from simclr.config.run import load_config
from simclr.config.schema import ConfigError


def _cfg(tiny_overrides, *extra):
    return load_config("configs/digits_cpu.yaml", [*tiny_overrides, *extra])


@pytest.mark.parametrize("native,used,channels_last", [(True, "bf16-mixed", True), (False, "32", False)])
def test_auto_follows_the_cpu_bf16_detector(tiny_overrides, monkeypatch, native, used, channels_last):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: native)
    cfg = _cfg(tiny_overrides)
    assert (cfg.trainer.precision, cfg.trainer.channels_last) == ("auto", "auto")
    resolved, record = train.resolve_precision(cfg)
    assert (resolved.trainer.precision, resolved.trainer.channels_last) == (used, channels_last)
    assert record == {"requested": "auto", "used": used, "channels_last": channels_last,
                      "channels_last_requested": "auto", "cpu_bf16": native}
    assert cfg.trainer.precision == "auto"  # a new config; the one given is not touched
    assert resolved.trainer.max_epochs == cfg.trainer.max_epochs and resolved.data == cfg.data


def test_explicit_values_are_kept(tiny_overrides, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    resolved, record = train.resolve_precision(_cfg(tiny_overrides, "trainer.precision=32"))
    assert resolved.trainer.precision == "32" and resolved.trainer.channels_last is False  # fp32 on request
    assert record["requested"] == record["used"] == "32"
    resolved, _ = train.resolve_precision(_cfg(tiny_overrides, "trainer.channels_last=false"))
    assert resolved.trainer.precision == "bf16-mixed" and resolved.trainer.channels_last is False
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    resolved, _ = train.resolve_precision(_cfg(tiny_overrides, "trainer.precision=bf16-mixed",
                                               "trainer.channels_last=true"))
    assert resolved.trainer.precision == "bf16-mixed" and resolved.trainer.channels_last is True


@pytest.mark.parametrize("supported,used", [(True, "bf16-mixed"), (False, "32")])
def test_auto_on_a_gpu(tiny_overrides, monkeypatch, supported, used):
    monkeypatch.setattr(devices, "accelerator", lambda cfg: "gpu")
    # native bf16 only: a GPU that merely emulates it (V100, T4) trains faster in fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: supported and not including_emulation)
    resolved, _ = train.resolve_precision(_cfg(tiny_overrides))
    assert resolved.trainer.precision == used and resolved.trainer.channels_last is True


def test_device_checks_pass_auto_and_still_refuse_fp16_on_cpu(tiny_overrides):
    train.check_device_options(_cfg(tiny_overrides))
    with pytest.raises(ConfigError, match="16-mixed"):
        train.check_device_options(_cfg(tiny_overrides, "trainer.precision=16-mixed"))


class Dtypes(pl.Callback):
    """Records the dtype the projection head computes in (bf16 under autocast) and the loss's."""

    def __init__(self):
        self.seen = {}

    def on_train_start(self, trainer, module):
        def record(name):
            def hook(_module, _args, out):  # returns None: the output is left as it is
                self.seen.setdefault(name, (out if name == "head" else out[0]).dtype)
            return hook
        for name in ("head", "criterion"):
            getattr(module, name).register_forward_hook(record(name))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen["views_channels_last"] = batch[0].is_contiguous(memory_format=torch.channels_last)


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        trainer.should_stop = True


def test_auto_trains_bf16_with_an_fp32_loss_records_it_and_resumes(tiny_overrides, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)  # the bf16 path, whatever this CPU has
    dtypes = Dtypes()
    result = train.run(_cfg(tiny_overrides, "trainer.max_epochs=2", "trainer.knn_monitor_every=1"),
                       callbacks=[dtypes, StopAfterFirstEpoch()])
    assert dtypes.seen["head"] == torch.bfloat16        # autocast was on ...
    assert dtypes.seen["criterion"] == torch.float32    # ... and NT-Xent still computed in fp32
    assert dtypes.seen["views_channels_last"]
    status = json.loads((result.run_dir / "run.json").read_text())
    assert status["status"] == "stopped" and status["metrics"]["monitor/knn_top1"] >= 0
    assert status["precision"] == {"requested": "auto", "used": "bf16-mixed", "channels_last": True,
                                   "channels_last_requested": "auto", "cpu_bf16": True}
    written = yaml.safe_load((result.run_dir / "config.yaml").read_text())["trainer"]
    assert written["precision"] == "bf16-mixed" and written["channels_last"] is True
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)  # resumed on a machine without native bf16
    resumed = train.run(resume=result.run_dir)
    status = json.loads((resumed.run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["precision"]["used"] == "bf16-mixed"  # as it started
    assert status["precision"]["requested"] == "auto"


def test_a_run_recorded_before_auto_resumes_in_fp32(tiny_overrides, monkeypatch):
    """Older runs wrote precision '32' and channels_last false (then the defaults) and no precision record."""
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    cfg = _cfg(tiny_overrides, "trainer.max_epochs=2", "trainer.knn_monitor_every=0", "trainer.precision=32",
               "trainer.channels_last=false")
    result = train.run(cfg, callbacks=[StopAfterFirstEpoch()])
    status_file = result.run_dir / "run.json"
    status = json.loads(status_file.read_text())
    del status["precision"]
    status_file.write_text(json.dumps(status))
    resumed = train.run(resume=result.run_dir)
    status = json.loads(status_file.read_text())
    assert status["status"] == "finished"
    assert status["precision"]["requested"] == status["precision"]["used"] == "32"
    assert status["precision"]["channels_last"] is False
    assert resumed.run_dir == result.run_dir


def test_committed_runs_record_resolved_precision_and_older_ones_stay_fp32():
    """Every committed run's config.yaml holds the precision it trained with (never `auto`), loads as it was
    stored and is left as it is by resolve_precision; studies recorded before `auto` read as fp32."""
    from pathlib import Path
    results = Path(__file__).resolve().parents[1] / "results"
    configs = sorted(results.glob("*/runs/*/config.yaml"))
    assert configs, f"no committed runs under {results}"
    for path in configs:
        cfg = load_config(path, stored=True)
        assert cfg.trainer.precision != "auto" and cfg.trainer.channels_last != "auto", path
        assert train.resolve_precision(cfg)[0] == cfg, path
    older = sorted(results.glob("cifar_colour_crop_sweep/runs/*/config.yaml"))
    assert older and all(load_config(p, stored=True).trainer.precision == "32" for p in older)


def test_features_are_fp32_even_inside_bf16_autocast():
    """The kNN monitor runs inside a bf16-mixed training loop; its features must not come out bf16-rounded."""
    from simclr.data import ImageData
    from simclr.evaluate.features import extract_features
    from simclr.models import Encoder
    torch.manual_seed(0)
    encoder = Encoder("small_cnn", in_channels=1, cifar_stem=True, width=8)
    images = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8)
    data = ImageData(images, torch.zeros(12, dtype=torch.long), ("a",))
    pre = lambda x: x.float() / 255  # noqa: E731
    plain = extract_features(encoder, data, pre)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = extract_features(encoder, data, pre)
        assert encoder(pre(data.images)).dtype == torch.bfloat16  # autocast really is on here
    assert under_autocast.dtype == torch.float32 and torch.equal(plain, under_autocast)
