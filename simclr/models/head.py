"""Projection head (also the predictors' MLP): Linear -> (BN) -> ReLU, repeated, then Linear (-> BN without affine,
SimCLR v2 and MoCo v3; BYOL's and VICReg's projectors and every predictor end at the Linear)."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, layers: int = 2,
                 batch_norm: bool = True, last_batch_norm: bool | None = None):
        """last_batch_norm: the output BN; None follows `batch_norm`."""
        super().__init__()
        last_bn = batch_norm if last_batch_norm is None else last_batch_norm
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
            if batch_norm:
                blocks += [nn.BatchNorm1d(hidden_dim)]
            blocks += [nn.ReLU(inplace=True)]
            dim = hidden_dim
        blocks += [nn.Linear(dim, out_dim, bias=not last_bn)]
        if last_bn:
            blocks += [nn.BatchNorm1d(out_dim, affine=False)]
        self.net = nn.Sequential(*blocks)

    def forward(self, h):
        return self.net(h)  # (B, in_dim) -> (B, out_dim)
