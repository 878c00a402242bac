"""Backbone registry: name -> builder returning (module, feature_dim). torchvision does the ResNets;
`timm:<name>` builds any timm model (simclr.models.timm_backbone)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50

from simclr.config.backbone import TIMM_PREFIX
from simclr.config.run import ModelConfig
from simclr.config.schema import ConfigError
from simclr.models.conv_guard import guard_strided_convs
from simclr.models.timm_backbone import timm_backbone

BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {}


def register(name: str):
    def wrap(fn):
        BACKBONES[name] = fn
        return fn
    return wrap


def _resnet(factory, in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    net = factory(weights=None)  # never downloads: weights=None
    if cifar_stem:  # SimCLR's CIFAR variant: 3x3 stride-1 conv, no max-pool
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


@register("resnet18")
def _r18(in_channels=3, cifar_stem=True, width=64):
    return _resnet(resnet18, in_channels, cifar_stem)


@register("resnet34")
def _r34(in_channels=3, cifar_stem=True, width=64):
    return _resnet(resnet34, in_channels, cifar_stem)


@register("resnet50")
def _r50(in_channels=3, cifar_stem=True, width=64):
    return _resnet(resnet50, in_channels, cifar_stem)


@register("small_cnn")
def _small_cnn(in_channels=3, cifar_stem=True, width=32):
    """Five conv layers (~0.3M params at width 32) for CPU runs; global-average-pooled features."""
    w = width
    chans = [in_channels, w, w, 2 * w, 2 * w, 4 * w]
    layers: list[nn.Module] = []
    for i in range(5):
        stride = 2 if i in (1, 3) else 1
        layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride, 1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                   nn.ReLU(inplace=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), chans[-1]


class Encoder(nn.Module):
    """Backbone wrapper: `forward` gives (B, feature_dim) features; `feature_dim` says how many.

    `name`: a registered backbone, or timm:<model> for any timm model (cifar_stem and width apply to the
    registered ones only). `image_size`: the side of the images it will see, for models built for one
    input size (timm ViTs)."""

    def __init__(self, name: str, in_channels: int = 3, cifar_stem: bool = True, width: int = 64,
                 image_size: int | None = None):
        super().__init__()
        self.name = name
        if name.startswith(TIMM_PREFIX):
            self.net, self.feature_dim = timm_backbone(name.removeprefix(TIMM_PREFIX), in_channels, image_size)
        elif name in BACKBONES:
            self.net, self.feature_dim = BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem, width=width)
        else:
            raise ValueError(f"unknown backbone '{name}'; valid: {', '.join(sorted(BACKBONES))} or timm:<name>")
        guard_strided_convs(self.net)  # small maps under CPU bf16: see models/conv_guard.py

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, feature_dim)


def check_fits(m: ModelConfig, in_channels: int, image_size: int) -> None:
    """Refuse, in one line naming model.backbone, a backbone that cannot take (in_channels, image_size,
    image_size) images — a ViT patch larger than the image, a window that does not tile it. Built and run
    on the meta device: shapes only, no memory, no compute. The registered backbones take any size from 4 px
    up (data.image_size's floor) and are not built here."""
    if not m.backbone.startswith(TIMM_PREFIX):
        return
    try:
        with torch.device("meta"):
            Encoder(m.backbone, in_channels, m.cifar_stem, m.width, image_size)(
                torch.empty(2, in_channels, image_size, image_size))
    except ConfigError:
        raise
    except Exception as e:  # whatever the model raises; its first line says what does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.backbone: {m.backbone} cannot take {in_channels}-channel {image_size}x{image_size} "
                          f"images ({first}); choose a model that takes them, or another size (the policy's crop "
                          "size, else data.image_size).") from None
