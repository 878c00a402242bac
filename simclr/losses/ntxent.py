"""NT-Xent (normalised-temperature cross-entropy), rank-aware.

With world size W and local batch n, each rank's 2n local views are scored against all 2nW
gathered views (a differentiable all-gather, so gradients reach the other ranks' embeddings).
A query's positive sits at column rank*2n + (i + n) mod 2n of the gathered matrix. Each rank
returns the mean over its local queries; DDP's gradient averaging then equals the gradient of
the single-process loss over the full batch (tests/test_ddp.py checks this).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simclr.losses.gather import gather_all as _gather


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True,
            return_logits: bool = False):
    """z1, z2: (n, D) projections of two views of the same n images. Computed in fp32 even under
    autocast: bf16 logits / temperature lose the small similarity differences the loss is made of."""
    n = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):                # autocast would run the matmul in bf16
        z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)      # (2n, D)
        keys, rank = _gather(z) if gather else (z, 0)                   # (2nW, D)
        logits = z @ keys.T / temperature                               # (2n, 2nW) float32
    local = torch.arange(2 * n, device=z.device)
    offset = rank * 2 * n
    logits[local, local + offset] = float("-inf")                       # a view is not its own negative
    targets = (local + n) % (2 * n) + offset                            # the other view of the same image
    with torch.autocast(z1.device.type, enabled=False):
        loss = F.cross_entropy(logits, targets)
    return (loss, logits, targets) if return_logits else loss


class NTXentLoss(nn.Module):
    def __init__(self, temperature: float = 0.5, gather: bool = True):
        super().__init__()
        self.temperature, self.gather = temperature, gather

    def forward(self, z1, z2, return_logits: bool = False):
        return nt_xent(z1, z2, self.temperature, self.gather, return_logits)
