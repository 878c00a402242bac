"""SimCLR projection head: Linear -> (BN) -> ReLU, repeated, then Linear (-> BN without affine, SimCLR v2)."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, layers: int = 2,
                 batch_norm: bool = True):
        super().__init__()
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(dim, hidden_dim, bias=not batch_norm)]
            if batch_norm:
                blocks += [nn.BatchNorm1d(hidden_dim)]
            blocks += [nn.ReLU(inplace=True)]
            dim = hidden_dim
        blocks += [nn.Linear(dim, out_dim, bias=not batch_norm)]
        if batch_norm:
            blocks += [nn.BatchNorm1d(out_dim, affine=False)]
        self.net = nn.Sequential(*blocks)

    def forward(self, h):
        return self.net(h)  # (B, in_dim) -> (B, out_dim)
