"""The cross-device gather every rank-aware loss uses."""
from __future__ import annotations

import torch
import torch.distributed as dist


def gather_all(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's `z` concatenated in rank order, this rank). Differentiable: the backward hands each rank the
    sum over ranks of the gradient reaching its rows, so a loss that every rank computes on the gathered tensor,
    with DDP averaging the gradients, has the gradient of that loss computed once on the full batch.
    One process (or no process group): (z, 0)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0
    from torch.distributed.nn.functional import all_gather  # differentiable
    return torch.cat(all_gather(z), dim=0), dist.get_rank()
