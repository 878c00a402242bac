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


class SmallInputSafeConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state_dict) that leaves CPU bf16 autocast for inputs smaller than its
    stride; every other call is nn.Conv2d's own."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and (x.shape[-2] < self.stride[0] or x.shape[-1] < self.stride[1])):
            with torch.autocast("cpu", enabled=False):
                return super()._conv_forward(x.float(), weight.float(), None if bias is None else bias.float())
        return super()._conv_forward(x, weight, bias)


def guard_strided_convs(model: nn.Module) -> int:
    """Make every plain nn.Conv2d of `model` with a stride above 1 and a kernel above 1x1 a SmallInputSafeConv2d
    (in place; parameters, names and initial values untouched). Returns how many were guarded."""
    guarded = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and max(module.stride) > 1 and max(module.kernel_size) > 1:
            module.__class__ = SmallInputSafeConv2d
            guarded += 1
    return guarded
