"""Strided convolutions on inputs smaller than their stride run in fp32 under CPU bf16 autocast.

Why by hand: in torch 2.14.1 (oneDNN), the bf16 weight gradient of a padded convolution whose input is smaller
than its stride (e.g. a 3x3, stride-2 conv on a 1x1 map: ResNet layer4 on 16 px images) writes stale memory
into the taps that see only padding - sometimes NaN. The forward never reads those taps, so training looks fine
while the checkpoint and the exported weights carry garbage. fp32 computes them right (zero); these layers see
1-2 pixels, so fp32 costs nothing measurable. tests/test_conv_guard.py checks the guarded gradient against fp32.
"""
from __future__ import annotations

import torch
from torch import nn


class _SmallInputSafe:
    """Mixed in ahead of an nn.Conv2d class (timm's StdConv2d and other subclasses included: they override
    forward, so the check wraps forward): an input smaller than the stride leaves CPU bf16 autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and (x.shape[-2] < self.stride[0] or x.shape[-1] < self.stride[1])):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class SmallInputSafeConv2d(_SmallInputSafe, nn.Conv2d):
    """nn.Conv2d with the guard (same parameters, same state_dict)."""


_GUARDED: dict[type, type] = {nn.Conv2d: SmallInputSafeConv2d}


def _guarded(cls: type) -> type:
    """The guarded class for a Conv2d class, made once and named in this module so modules holding it pickle."""
    if cls not in _GUARDED:
        name = f"SmallInputSafe{cls.__name__}_{len(_GUARDED)}"
        guarded = type(name, (_SmallInputSafe, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = guarded
        _GUARDED[cls] = guarded
    return _GUARDED[cls]


def guard_strided_convs(model: nn.Module) -> int:
    """Give every Conv2d of `model` (subclasses included) with a stride above 1 and a kernel above 1x1 the guard
    (in place: parameters, names and initial values untouched). Returns how many were guarded."""
    guarded = 0
    for module in model.modules():
        if (isinstance(module, nn.Conv2d) and not isinstance(module, _SmallInputSafe)
                and max(module.stride) > 1 and max(module.kernel_size) > 1):
            module.__class__ = _guarded(type(module))
            guarded += 1
    return guarded
