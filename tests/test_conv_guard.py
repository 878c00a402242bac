"""Strided convs on maps smaller than their stride, under CPU bf16 autocast (simclr/models/conv_guard.py): the
weight gradient equals fp32's, with exact zeros on the taps that see only padding, and the guard changes nothing
else (parameters, names, outputs elsewhere)."""
import itertools

import pytest
import torch
from torch import nn

from simclr.models import Encoder
from simclr.models.conv_guard import SmallInputSafeConv2d, guard_strided_convs


def _padding_only_taps(size: int, k: int, s: int, p: int) -> torch.Tensor:
    seen = torch.zeros(k, k, dtype=torch.bool)
    out = (size + 2 * p - k) // s + 1
    for oy, ox, ky, kx in itertools.product(range(out), range(out), range(k), range(k)):
        if 0 <= oy * s - p + ky < size and 0 <= ox * s - p + kx < size:
            seen[ky, kx] = True
    return ~seen


def _weight_grad(conv: nn.Conv2d, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    (y.float() ** 2).mean().backward()
    return conv.weight.grad.clone()


@pytest.mark.parametrize("size,k,s,p", [(1, 3, 2, 1), (2, 3, 3, 1), (1, 7, 2, 3)])
def test_guarded_bf16_weight_grad_equals_fp32_and_is_zero_on_padding_only_taps(size, k, s, p):
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, k, s, p, bias=False)
    assert guard_strided_convs(conv) == 1 and isinstance(conv, SmallInputSafeConv2d)
    dead = _padding_only_taps(size, k, s, p)
    assert dead.any()
    for _ in range(10):  # unguarded, torch 2.14.1 got this wrong in most of 10 tries on every shape here
        x = torch.randn(32, 64, size, size)
        guarded, reference = _weight_grad(conv, x, bf16=True), _weight_grad(conv, x, bf16=False)
        assert torch.isfinite(guarded).all()
        assert torch.count_nonzero(guarded[:, :, dead]) == 0
        torch.testing.assert_close(guarded, reference, rtol=1e-5, atol=1e-6)


def test_the_guard_keeps_parameters_names_and_bf16_elsewhere():
    torch.manual_seed(0)
    plain = Encoder("resnet18", in_channels=1, cifar_stem=False, width=8)
    guarded_types = {type(m) for m in plain.modules() if isinstance(m, nn.Conv2d)}
    assert SmallInputSafeConv2d in guarded_types and nn.Conv2d in guarded_types  # strided 3x3s, stride-1 convs
    torch.manual_seed(0)
    reference = nn.Sequential()  # the same draws without the guard: torchvision's resnet18 as Encoder builds it
    from simclr.models.backbones import BACKBONES
    reference.net, _ = BACKBONES["resnet18"](in_channels=1, cifar_stem=False, width=8)
    assert list(plain.state_dict()) == list(reference.state_dict())
    for a, b in zip(plain.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    conv = SmallInputSafeConv2d(8, 8, 3, 2, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 8, 8, 8)).dtype == torch.bfloat16   # a map larger than the stride: bf16
        assert conv(torch.randn(2, 8, 1, 1)).dtype == torch.float32    # smaller: fp32


def test_a_timm_resnet_on_16px_trains_at_bf16_with_finite_weights():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    enc = Encoder("timm:resnet10t", in_channels=1, image_size=16)
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = enc(torch.randn(16, 1, 16, 16)).float().pow(2).mean()
        loss.backward()
        opt.step()
    for name, p in enc.named_parameters():
        assert torch.isfinite(p).all(), name
