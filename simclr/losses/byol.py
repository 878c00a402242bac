"""BYOL's loss (Grill et al. 2020, eq. 2), symmetrised: the normalised MSE between the online network's predictions
and the target network's projections of the other view, ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z).

Per-sample, so it needs nothing from other devices: each rank's batch mean, averaged by DDP, is the full-batch mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """p1, p2: (n, D) online predictions of views 1 and 2; z1, z2: the target's projections of the same views
    (detached here: no gradient reaches the target). Returns L(p1, z2) + L(p2, z1), each the batch mean of
    2 - 2 cos, as the paper's L + L~. fp32 even under autocast, as NT-Xent."""
    with torch.autocast(p1.device.type, enabled=False):
        p = F.normalize(torch.cat([p1, p2]).float(), dim=1)
        z = F.normalize(torch.cat([z2, z1]).detach().float(), dim=1)      # each prediction's other view
        per_sample = 2 - 2 * (p * z).sum(dim=1)                            # (2n,)
        return per_sample.view(2, -1).mean(dim=1).sum()
