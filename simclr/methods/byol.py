"""BYOL (Grill et al. 2020): the online encoder, projector and predictor regress the target network's projection
of the other view; the target is an EMA of the online encoder and projector (cosine schedule from
method.byol.momentum_base to 1). No negatives, so nothing crosses devices.

Each view goes through the networks on its own (BatchNorm statistics per view), as in the reference
implementation; the projector ends at its Linear (no output BN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.losses import byol_loss
from simclr.methods.base import MomentumMethod, StepOutput, predictor, register


@register
class BYOL(MomentumMethod):
    name = "byol"
    projector_last_bn = False

    def __init__(self, cfg, encoder, head):
        p = cfg.method.byol
        super().__init__(cfg, encoder, head, p.momentum_base)
        self.predictor = predictor(cfg.model, p.predictor_hidden_dim)

    def trainable(self):
        return [self.predictor]

    def step(self, encode, head, v1, v2):
        h1, h2 = encode(v1), encode(v2)
        p1, p2 = self.predictor(head(h1)), self.predictor(head(h2))
        z1, z2 = self.target(v1), self.target(v2)                      # no_grad: the stop-gradient
        loss = byol_loss(p1, p2, z1, z2)
        with torch.no_grad():
            cos = (F.cosine_similarity(p1.float(), z2.float(), dim=1).mean()
                   + F.cosine_similarity(p2.float(), z1.float(), dim=1).mean()) / 2
        return StepOutput(loss, torch.cat([h1, h2]), {"pos_cosine": cos})
