"""Backbone registry: name -> builder returning (module, feature_dim). torchvision does the ResNets."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50

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
    """Backbone wrapper: `forward` gives (B, feature_dim) features; `feature_dim` says how many."""

    def __init__(self, name: str, in_channels: int = 3, cifar_stem: bool = True, width: int = 64):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone '{name}'; valid: {', '.join(sorted(BACKBONES))}")
        self.name = name
        self.net, self.feature_dim = BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, feature_dim)
