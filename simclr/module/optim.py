"""Optimizers and schedules: LARS (none of torch/Lightning ships one), SGD, AdamW; warm-up + cosine."""
from __future__ import annotations

import math

import torch
from torch import nn

from simclr.config.run import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017), as in SimCLR.

    Param groups with `exclude=True` (biases, norm layers) get neither the trust ratio nor weight decay.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coefficient: float = 1e-3, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    # trust ratio without a host sync: where() keeps it on device
                    ratio = torch.where((p_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * p_norm / (g_norm + group["eps"]),
                                        torch.ones_like(p_norm))
                    grad = grad * ratio
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def split_decay(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights that get decay/adaptation, biases and norm parameters that do not)."""
    decay, no_decay = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
            (no_decay if is_norm or name == "bias" else decay).append(p)
    return decay, no_decay


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    factor = {"linear": global_batch / 256, "sqrt": math.sqrt(global_batch / 256), "none": 1.0}[cfg.lr_scaling]
    return cfg.lr * factor


def build_optimizer(cfg: OptimConfig, module: nn.Module, lr: float, probe: nn.Module | None = None,
                    probe_lr: float | None = None) -> torch.optim.Optimizer:
    """One optimizer, named parameter groups (what LearningRateMonitor shows): `ssl` (weights: decay and, for
    LARS, adaptation), `ssl_no_decay` (biases, norm layers) and, given a `probe`, `probe`: the online linear
    probe on detached features, plain SGD with momentum at `probe_lr` under LARS and SGD (AdamW steps it too)."""
    decay, no_decay = split_decay(module)
    plain = {"exclude": True} if cfg.name == "lars" else {}  # LARS groups with exclude=True are plain SGD
    groups = [{"name": "ssl", "params": decay, "weight_decay": cfg.weight_decay},
              {"name": "ssl_no_decay", "params": no_decay, "weight_decay": 0.0, **plain}]
    if probe is not None:
        groups.append({"name": "probe", "params": list(probe.parameters()), "weight_decay": 0.0,
                       "lr": probe_lr if probe_lr is not None else cfg.probe_lr, **plain})
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.trust_coefficient)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """LambdaLR factor: linear warm-up to 1, then cosine down to `min_ratio`."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
