"""Exported backbones load into the real libraries (torchvision, timm) and give simclr's features."""
import json

import pytest
import torch
import torchvision
from torch import nn

from simclr.cli import main
from simclr.evaluate.checkpoint import build_encoder, load_run
from simclr.evaluate.export import backbone_state
from simclr.models import Encoder


def _randomise_bn(encoder: Encoder) -> Encoder:
    """Non-trivial running statistics, so eval-mode features depend on every buffer being loaded."""
    g = torch.Generator().manual_seed(1)
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return encoder.eval()


def library_model(library: str, backbone: str, in_channels: int, cifar_stem: bool) -> nn.Module:
    """What docs/python.md tells a user to write."""
    if library == "timm":
        timm = pytest.importorskip("timm")
        model = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_channels)
    else:
        model = getattr(torchvision.models, backbone)(weights=None)
        model.fc = nn.Identity()
        if in_channels != 3 and not cifar_stem:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


CASES = [("resnet18", stem, c) for stem in (True, False) for c in (1, 3)] + [("resnet50", False, 3)]


@pytest.mark.parametrize("library", ["torchvision", "timm"])
@pytest.mark.parametrize("backbone, cifar_stem, in_channels", CASES)
def test_export_loads_into_the_library_model(library, backbone, cifar_stem, in_channels):
    torch.manual_seed(0)
    encoder = _randomise_bn(Encoder(backbone, in_channels=in_channels, cifar_stem=cifar_stem))
    model = library_model(library, backbone, in_channels, cifar_stem)
    model.load_state_dict(backbone_state(encoder, library))  # strict: every name and shape matches
    x = torch.randn(2, in_channels, 32, 32)
    with torch.no_grad():
        theirs, ours = model.eval()(x), encoder(x)
    assert theirs.shape == ours.shape == (2, encoder.feature_dim)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_cli_export_of_a_trained_run(tiny_overrides, tmp_path, capsys):
    args = [*tiny_overrides, "name=r18", "model.backbone=resnet18", "trainer.max_epochs=1",
            "trainer.limit_train_batches=1", "trainer.knn_monitor_every=0"]
    assert main(["pretrain", *args]) == 0
    run = tmp_path / "runs" / "r18"
    assert main(["export", str(run), "--format", "torchvision"]) == 0
    out = run / "export" / "backbone-torchvision.pth"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == "resnet18" and meta["in_channels"] == 1 and meta["cifar_stem"] is True
    model = library_model("torchvision", "resnet18", meta["in_channels"], meta["cifar_stem"])
    model.load_state_dict(torch.load(out, weights_only=True))
    encoder = build_encoder(load_run(run)).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder(x), atol=1e-5, rtol=1e-5)
    assert main(["export", str(run), "--format", "torchvision"]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "state_dict", "--out", str(tmp_path / "enc.pth")]) == 0
    again = Encoder("resnet18", in_channels=1, cifar_stem=True)
    again.load_state_dict(torch.load(tmp_path / "enc.pth", weights_only=True))
    with torch.no_grad():
        assert torch.equal(again.eval()(x), encoder(x))


def test_small_cnn_has_no_torchvision_counterpart(tiny_overrides, tmp_path, capsys):
    assert main(["pretrain", *tiny_overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                 "trainer.knn_monitor_every=0"]) == 0
    assert main(["export", str(tmp_path / "runs" / "tiny"), "--format", "timm"]) == 2
    assert "backbone 'small_cnn' has no timm counterpart; use --format state_dict" in capsys.readouterr().err
