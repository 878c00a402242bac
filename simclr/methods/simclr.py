"""SimCLR (Chen et al. 2020): NT-Xent between the projections of the two views, negatives from the whole batch.

Exactly the module's arithmetic before methods existed (one encoder call on both views, so BatchNorm sees them
together): tests/test_golden.py pins its numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.losses import NTXentLoss
from simclr.methods.base import Method, StepOutput, register


@register
class SimCLR(Method):
    name = "simclr"

    def __init__(self, cfg, encoder, head):
        super().__init__(cfg, encoder, head)
        self.criterion = NTXentLoss(cfg.loss.temperature, cfg.loss.gather)  # no parameters: no state-dict keys

    def step(self, encode, head, v1, v2):
        h = encode(torch.cat([v1, v2]))                                 # (2n, F)
        z1, z2 = head(h).chunk(2)                                       # (n, D) each
        loss, logits, targets = self.criterion(z1, z2, return_logits=True)
        with torch.no_grad():
            pos_cos = F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
            top1 = (logits.argmax(dim=1) == targets).float().mean()
        return StepOutput(loss, h, {"pos_cosine": pos_cos, "contrastive_top1": top1})
