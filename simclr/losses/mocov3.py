"""MoCo v3's loss (Chen et al. 2021, Algorithm 1): InfoNCE between queries (online branch, with predictor) and
keys (momentum encoder), symmetrised: ctr(q1, k2) + ctr(q2, k1), ctr(q, k) = CE(q k^T / tau, positives) * 2 tau.

Keys come from every device (the reference's concat_all_gather): a query's negatives are all other images of the
global batch; its positive sits at column rank * n + i. Keys carry no gradient (the momentum encoder's), so the
gather needs none; each rank averages its own queries and DDP averages ranks, i.e. the full-batch mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.losses.gather import gather_all


def contrast(q: torch.Tensor, k: torch.Tensor, temperature: float, gather: bool = True):
    """(loss, logits, targets) of one direction; q, k: (n, D), not yet normalised."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    keys, rank = gather_all(k) if gather else (k, 0)                    # (nW, D)
    logits = q @ keys.T / temperature                                   # (n, nW)
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return F.cross_entropy(logits, targets) * (2 * temperature), logits, targets


def mocov3_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float = 0.2,
                gather: bool = True, return_logits: bool = False):
    """q1, q2: (n, D) predictions of views 1, 2; k1, k2: momentum projections of the same views. fp32 under autocast
    (bf16 logits / tau would lose the differences the loss is made of). `return_logits`: also view 1's queries'
    (logits, targets), for the contrastive top-1 shown in training."""
    with torch.autocast(q1.device.type, enabled=False):
        l12, logits, targets = contrast(q1, k2, temperature, gather)
        l21, _, _ = contrast(q2, k1, temperature, gather)
        loss = l12 + l21
    return (loss, logits, targets) if return_logits else loss
