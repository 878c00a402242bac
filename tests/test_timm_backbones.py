"""`model.backbone: timm:<name>`: refused in one line when it cannot work; trained, evaluated and exported like
any other backbone when it can, on 1-channel digits, and the export loads back into timm with the run's
preprocessing."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from simclr.cli import main
from simclr.config.run import load_config
from simclr.config.schema import ConfigError
from simclr.evaluate.checkpoint import build_encoder, load_run
from simclr.models import Encoder

timm = pytest.importorskip("timm")
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.knn_monitor_every=0"]


@pytest.mark.parametrize("backbone, message", [
    ("timm:resnet10", "model.backbone: 'timm:resnet10': timm"),
    ("timm:resnet10", "Did you mean timm:resnet10t"),
    ("timm:vit_tiny", "Did you mean timm:vit_tiny_patch16_224"),
    ("timm:resnet10t.c3_in1k", "selects pretrained weights, which simclr never loads (pretrained=False); "
                               "write timm:resnet10t."),
    ("resnet19", "Did you mean 'resnet18'? Valid: resnet18, resnet34, resnet50, small_cnn, or timm:<name>"),
])
def test_config_names_the_key_and_close_names(backbone, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.name=digits", f"model.backbone={backbone}"])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_without_timm_the_config_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ConfigError, match=r"model.backbone: 'timm:resnet10t' needs timm, which is not installed: "
                                          r"pip install timm \(or the extra simclr-augment\[timm\]\)"):
        load_config(None, ["data.name=digits", "model.backbone=timm:resnet10t"])
    assert load_config(None, ["data.name=digits"]).model.backbone == "resnet18"  # built-ins need no timm


def test_a_model_that_cannot_take_the_images_is_refused_before_a_run_exists(tiny_overrides, tmp_path, capsys):
    # the digits policy crops to 16 px: less than one 32 px patch
    assert main(["pretrain", *tiny_overrides, *FAST, "model.backbone=timm:vit_base_patch32_224"]) == 2
    err = capsys.readouterr().err
    assert "model.backbone: timm:vit_base_patch32_224 cannot take 1-channel 16x16 images" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_vit_is_built_for_the_run_image_size():
    encoder = Encoder("timm:vit_tiny_patch16_224", in_channels=1, image_size=32)
    assert encoder.net.patch_embed.grid_size == (2, 2) and encoder.feature_dim == 192
    assert encoder(torch.randn(3, 1, 32, 32)).shape == (3, 192)


# resnet10t in fp32: it shrinks 16 px images to 1x1 before layer4's stride-2 conv, whose weight gradient torch's
# CPU bf16 kernels compute from uninitialised memory (NaN now and then; the built-in resnet18 with
# cifar_stem=false does the same at 16 px). The ViT trains at the precision `auto` picks.
@pytest.mark.parametrize("backbone, precision", [("timm:resnet10t", ["trainer.precision=32"]),
                                                 ("timm:vit_tiny_patch16_224", [])])
def test_timm_run_trains_evaluates_and_exports(backbone, precision, tiny_overrides, tmp_path, capsys):
    name = backbone.removeprefix("timm:")
    assert main(["pretrain", *tiny_overrides, *FAST, *precision, f"model.backbone={backbone}", "--evaluate",
                 "knn"]) == 0
    run = tmp_path / "runs" / "tiny"
    results = json.loads((run / "eval" / "eval-1" / "results.json").read_text())
    assert 0 <= results["metrics"]["simclr"]["knn_k20"]["top1"] <= 1

    assert main(["export", str(run), "--format", "torchvision"]) == 2
    assert f"backbone '{backbone}' has no torchvision counterpart; use --format timm or state_dict" in \
        capsys.readouterr().err
    assert main(["export", str(run), "--format", "timm"]) == 0
    out = run / "export" / "backbone-timm.pth"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == backbone and meta["in_channels"] == 1 and meta["cifar_stem"] is None
    fixed = {"img_size": 16} if "vit" in name else {}  # the digits policy's 16 px crop
    assert meta["create_model"] == {"model_name": name, "pretrained": False, "num_classes": 0, "in_chans": 1,
                                    **fixed}
    # what a user writes: the weights load strictly into timm's own model and give simclr's features
    model = timm.create_model(**meta["create_model"], pretrained_cfg_overlay=meta["pretrained_cfg"])
    model.load_state_dict(torch.load(out, weights_only=True))
    encoder = build_encoder(load_run(run)).eval()
    for key, value in encoder.net.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder(x), atol=1e-5, rtol=1e-5)
    # timm's data config is the run's preprocessing (digits policy: 16 px, normalize 0.3/0.4), not ImageNet's
    data = timm.data.resolve_data_config({}, model=model)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()} == {  # JSON gives lists
        "input_size": (1, 16, 16), "interpolation": "bilinear", "mean": (0.3,), "std": (0.4,), "crop_pct": 1.0,
        "crop_mode": "squash"}
    image = Image.fromarray(np.arange(8 * 12, dtype=np.uint8).reshape(8, 12), mode="L")  # any size, squashed
    assert timm.data.create_transform(**data)(image).shape == (1, 16, 16)

    assert main(["export", str(run), "--format", "state_dict"]) == 0
    again = Encoder(backbone, in_channels=1, image_size=16)
    again.load_state_dict(torch.load(run / "export" / "backbone-state_dict.pth", weights_only=True))
    with torch.no_grad():
        assert torch.equal(again.eval()(x), encoder(x))
