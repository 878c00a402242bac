"""Every registered backbone (timm-style: a new entry is tested for free), timm backbones of three kinds, and
LARS against timm's."""
import pytest
import torch
from torch import nn

from simclr.config.backbone import BUILTIN_BACKBONES
from simclr.config.run import OptimConfig
from simclr.models import BACKBONES, Encoder, ProjectionHead
from simclr.module.optim import LARS, build_optimizer

# a ResNet, a ViT built for the input size (img_size=16: one 16 px patch) and a CNN whose features come
# from a head after num_features (MobileNetV3: head_hidden_size 1024 > num_features 288)
TIMM = ["timm:resnet10t", "timm:vit_tiny_patch16_224", "timm:mobilenetv3_small_050"]
# cifar_stem applies to the registered backbones only
CASES = [(name, stem) for name in sorted(BACKBONES) for stem in (True, False)] + [(name, True) for name in TIMM]


def test_config_names_every_registered_backbone():
    assert sorted(BUILTIN_BACKBONES) == sorted(BACKBONES)


@pytest.mark.parametrize("name, cifar_stem", CASES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_backbone(name, in_channels, cifar_stem):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    encoder = Encoder(name, in_channels=in_channels, cifar_stem=cifar_stem, width=8, image_size=16)
    # timm zero-initialises each residual branch's last BN weight (zero_init_last): until the first step moves
    # it, no gradient reaches the layers before it. Parameters that start at zero are moved here instead.
    with torch.no_grad():
        for p in encoder.parameters():
            if not p.abs().sum() > 0:
                p.normal_()
    x = torch.randn(2, in_channels, 16, 16)
    h = encoder(x)
    assert h.shape == (2, encoder.feature_dim) and torch.isfinite(h).all()
    head = ProjectionHead(encoder.feature_dim, 16, 8)
    head(h).square().sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or not p.grad.abs().sum() > 0]
    assert not missing, f"no (finite, non-zero) gradient reaches {missing[:5]}"


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(8, 4, generator=g)), nn.Parameter(torch.randn(8, generator=g))]


def _grads(step, params):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def test_lars_matches_timm_over_several_steps():
    """Ours adapts with the norm of the decayed gradient (as SimCLR's TF LARS); timm's with ||g|| + wd ||w||.
    The two agree when timm gets the decay inside the gradient: timm(wd=0) on g + wd * w == ours(wd)."""
    timm_optim = pytest.importorskip("timm.optim")
    wd, lr, m, eta = 1e-2, 0.3, 0.9, 1e-3
    ours_p, theirs_p = _params(0), _params(0)
    ours = LARS([{"params": ours_p[:1]}, {"params": ours_p[1:], "exclude": True, "weight_decay": 0.0}],
                lr=lr, momentum=m, weight_decay=wd, trust_coefficient=eta)
    theirs = timm_optim.Lars([{"params": theirs_p[:1], "always_adapt": True},
                              {"params": theirs_p[1:], "always_adapt": False}],
                             lr=lr, momentum=m, weight_decay=0.0, trust_coeff=eta)
    for step in range(5):
        grads = _grads(step, ours_p)
        for p, g in zip(ours_p, grads):
            p.grad = g.clone()
        theirs_p[0].grad = grads[0] + wd * theirs_p[0].detach()  # decay folded into the gradient
        theirs_p[1].grad = grads[1].clone()
        ours.step()
        theirs.step()
        for a, b in zip(ours_p, theirs_p):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.equal(ours_p[0], _params(0)[0])


def test_lars_excluded_group_is_plain_sgd_with_momentum():
    """Biases and norm parameters: no decay, no trust ratio — the same steps as torch's SGD with momentum."""
    cfg = OptimConfig(name="lars", weight_decay=0.1, momentum=0.9)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ours = build_optimizer(cfg, net, lr=0.5)
    excluded = [p for g in ours.param_groups if g.get("exclude") for p in g["params"]]
    assert [id(p) for p in excluded] == [id(net[0].bias), id(net[1].weight), id(net[1].bias)]
    twins = [nn.Parameter(p.detach().clone()) for p in excluded]
    sgd = torch.optim.SGD(twins, lr=0.5, momentum=0.9)
    for step in range(4):
        grads = _grads(step, excluded)
        for p, t, g in zip(excluded, twins, grads):
            p.grad, t.grad = g.clone(), g.clone()
        net[0].weight.grad = torch.ones_like(net[0].weight)
        ours.step()
        sgd.step()
        for p, t in zip(excluded, twins):
            torch.testing.assert_close(p, t, atol=1e-7, rtol=1e-6)
