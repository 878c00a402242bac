"""VICReg's loss (Bardes et al. 2022, eqs. 1-6 and Algorithm 1): invariance, variance and covariance terms.

Invariance is a per-sample MSE (each rank's mean, averaged by DDP, is the full-batch mean). Variance and covariance
are batch statistics: with `gather` they are computed on the embeddings of all devices (differentiable all-gather),
as the reference implementation's FullGatherLayer does, so every rank computes the full-batch terms;
tests/test_ddp_methods.py checks that 2 processes give the single-process loss and gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.losses.gather import gather_all

EPS = 1e-4  # inside the square root of the variance, as in the paper


def variance_term(z: torch.Tensor) -> torch.Tensor:
    """mean over dimensions of max(0, 1 - sqrt(Var(z_j) + eps)), the hinge at gamma = 1 (unbiased variance)."""
    std = torch.sqrt(z.var(dim=0) + EPS)
    return F.relu(1 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of the covariance matrix, divided by the dimension d."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, gather: bool = True, return_terms: bool = False):
    """z1, z2: (n, D) expander outputs of the two views. lambda * s(Z, Z') + mu * [v(Z) + v(Z')] / 2 +
    nu * [c(Z) + c(Z')]. `return_terms`: also (invariance, variance, covariance) unweighted. fp32 under autocast:
    the covariance squares entries that bf16 would round."""
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        if gather:
            z1, z2 = gather_all(z1)[0], gather_all(z2)[0]
        variance = (variance_term(z1) + variance_term(z2)) / 2
        covariance = covariance_term(z1) + covariance_term(z2)
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return (loss, (invariance, variance, covariance)) if return_terms else loss
