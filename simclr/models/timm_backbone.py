"""`timm:<name>` backbones: any timm model as a feature extractor, built untrained (nothing is downloaded).

timm is optional (pip install timm) and imported only here, when a timm backbone is built; the config has
already refused a timm backbone where timm is missing (simclr.config.backbone).
"""
from __future__ import annotations

from torch import nn

from simclr.config.schema import ConfigError


def timm_backbone(model: str, in_channels: int, image_size: int | None) -> tuple[nn.Module, int]:
    """timm.create_model(**create_args(...)) -> (module, feature_dim)."""
    import timm

    kwargs = create_args(model, in_channels, image_size)
    try:
        net = timm.create_model(**kwargs)
    except TypeError as e:  # e.g. a fixed-size model whose constructor takes no img_size
        raise ConfigError(f"model.backbone: timm:{model} cannot be built with {kwargs}: {e}") from None
    # forward's output size: models with a head before the classifier (MobileNetV3's conv head) return
    # head_hidden_size features, more than num_features
    return net, getattr(net, "head_hidden_size", None) or net.num_features


def create_args(model: str, in_channels: int, image_size: int | None = None) -> dict:
    """The arguments of timm.create_model that build `model` as simclr does: untrained, features out
    (num_classes=0), on `in_channels` channels. Models built for one input size (ViTs: `fixed_input_size` in
    timm's config) also get img_size=image_size, the side of the images they will see: their position
    embeddings and patch grid depend on it. image_size None: no lookup (timm need not be installed)."""
    args = {"model_name": model, "pretrained": False, "num_classes": 0, "in_chans": in_channels}
    if image_size is not None:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model)
        if cfg is not None and cfg.fixed_input_size:
            args["img_size"] = image_size
    return args
