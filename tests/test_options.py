"""Scale-out options, each smoke-tested on CPU where the CPU supports it (GPU-only ones fail clearly)."""
import json

import pytest

from simclr import train
from simclr.cli import main
from simclr.config.run import load_config


@pytest.mark.parametrize("option", ["trainer.precision=bf16-mixed", "trainer.channels_last=true",
                                    "trainer.sync_batchnorm=true", "trainer.compile=true",
                                    "trainer.compile_augment=true"])
def test_option_runs_one_epoch_on_cpu(tiny_overrides, option):
    cfg = load_config(None, [*tiny_overrides, option, "trainer.max_epochs=1", "trainer.knn_monitor_every=0"])
    result = train.run(cfg)
    status = json.loads((result.run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["metrics"]["train/loss_epoch"] > 0


@pytest.mark.parametrize("option,message", [
    ("trainer.precision=16-mixed", "trainer.precision: 16-mixed (fp16 autocast) needs a GPU"),
    ("trainer.accelerator=gpu", "no CUDA device is visible"),
])
def test_gpu_only_options_fail_clearly_on_cpu(tiny_overrides, capsys, option, message):
    if "accelerator=gpu" in option:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert main(["pretrain", *tiny_overrides, option]) == 2
    assert message in capsys.readouterr().err


def test_resume_checks_device_options_too(tiny_overrides, capsys):
    """A run resumed on a machine that cannot honour its options fails clearly, not deep in Lightning."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = train.run(load_config(None, [*tiny_overrides, "trainer.max_epochs=1", "trainer.knn_monitor_every=0"]))
    config = result.run_dir / "config.yaml"
    config.write_text(config.read_text().replace("accelerator: cpu", "accelerator: gpu"))  # as if moved from a GPU box
    ckpt = result.run_dir / "checkpoints" / "last.ckpt"  # the checkpoint records the same config (resume compares)
    blob = torch.load(ckpt, weights_only=True)
    blob["hyper_parameters"]["config"]["trainer"]["accelerator"] = "gpu"
    torch.save(blob, ckpt)
    assert main(["pretrain", "--resume", str(result.run_dir)]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
