"""The contract between the LightningModule and a method, the method registry, and the momentum-target machinery
BYOL and MoCo v3 share.

The LightningModule (simclr.module.simclr_module) owns what every method has: the online encoder (`encoder.*` in
checkpoints, what evaluation and export load), the projection head (`head.*`), the online probe and the
augmenter. A method owns only what is its own: predictors, target copies, its loss and its per-step update. It is
registered under the module as `method`, so its networks are `method.*` in the state dict (SimCLR has none:
its checkpoints keep the keys they always had) and a resume restores them exactly.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from simclr.config.run import ModelConfig, RunConfig
from simclr.models import ProjectionHead

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


@dataclass
class StepOutput:
    loss: torch.Tensor          # the method's loss (what train/loss logs); the module adds the probe's
    features: torch.Tensor      # (2n, F) online encoder features of [view 1; view 2], for the online probe
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # logged per step as train/<key>


class Method(nn.Module):
    name: ClassVar[str]
    projector_last_bn: ClassVar[bool] = True  # whether the head ends in BN (with model.head_batch_norm)

    def __init__(self, cfg: RunConfig, encoder: nn.Module, head: nn.Module):
        """encoder, head: the module's online networks, to copy (never registered here: they stay `encoder.*`)."""
        super().__init__()
        self.cfg = cfg

    def trainable(self) -> list[nn.Module]:
        """The method's own networks the optimizer steps with the encoder and head (its ssl param groups)."""
        return []

    def step(self, encode: Callable[[torch.Tensor], torch.Tensor], head: nn.Module, v1: torch.Tensor,
             v2: torch.Tensor) -> StepOutput:
        """One training step's loss on the views; `encode` is the (possibly compiled) online encoder."""
        raise NotImplementedError

    def after_optimizer_step(self, encoder: nn.Module, head: nn.Module, step: int, total: int) -> dict[str, float]:
        """Called right after optimizer step `step` (0-based) of `total`; returns values to log."""
        return {}


def predictor(model: ModelConfig, hidden_dim: int | None) -> ProjectionHead:
    """Linear-BN-ReLU-Linear from the projection back to its own size (BYOL's and MoCo v3's predictor)."""
    return ProjectionHead(model.head_out_dim, hidden_dim or model.head_hidden_dim, model.head_out_dim, layers=2,
                          batch_norm=True, last_batch_norm=False)


def cosine_momentum(base: float, step: int, total: int) -> float:
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2: tau_base at k = 0, rising to 1 at k = K
    (BYOL, Grill et al. 2020, sec. 3.2; MoCo v3 uses the same schedule for m)."""
    k = min(max(step, 0), total)
    return 1 - (1 - base) * (math.cos(math.pi * k / max(1, total)) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter. Buffers (BatchNorm's running
    statistics) are not averaged: the target keeps its own, as the reference implementations do."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    if len(t) != len(o):
        raise RuntimeError(f"target has {len(t)} parameters, online {len(o)}")
    torch._foreach_mul_(t, tau)
    torch._foreach_add_(t, o, alpha=1 - tau)


class MomentumMethod(Method):
    """A method with a target (momentum) copy of the encoder and head, updated by EMA after every optimizer step.

    The target gets no gradient (requires_grad False, run under no_grad) and is not in the optimizer. It runs in
    train mode like the rest of the module (BatchNorm on batch statistics), as in BYOL's and MoCo v3's reference
    implementations; its running statistics are never used (evaluation reads the online encoder)."""

    def __init__(self, cfg: RunConfig, encoder: nn.Module, head: nn.Module, momentum_base: float):
        super().__init__(cfg, encoder, head)
        self.momentum_base = momentum_base
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)  # starts equal to the online networks
        self.target_head = copy.deepcopy(head).requires_grad_(False)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_head(self.target_encoder(x))

    def after_optimizer_step(self, encoder, head, step, total):
        tau = cosine_momentum(self.momentum_base, step, total)
        ema_update(self.target_encoder, encoder, tau)
        ema_update(self.target_head, head, tau)
        return {"momentum": tau}
