"""MoCo v3 (Chen et al. 2021): queries from the online encoder, projector and predictor; keys from a momentum
copy of the encoder and projector (cosine schedule from method.mocov3.momentum_base to 1); InfoNCE against the
keys of the whole global batch (loss.gather), symmetrised over the two views.

Each view goes through the networks on its own, as in the reference implementation; the projector ends in BN
without affine and the predictor does not, as there.
"""
from __future__ import annotations

import torch

from simclr.losses import mocov3_loss
from simclr.methods.base import MomentumMethod, StepOutput, predictor, register


@register
class MoCoV3(MomentumMethod):
    name = "mocov3"
    projector_last_bn = True

    def __init__(self, cfg, encoder, head):
        p = cfg.method.mocov3
        super().__init__(cfg, encoder, head, p.momentum_base)
        self.predictor = predictor(cfg.model, p.predictor_hidden_dim)

    def trainable(self):
        return [self.predictor]

    def step(self, encode, head, v1, v2):
        h1, h2 = encode(v1), encode(v2)
        q1, q2 = self.predictor(head(h1)), self.predictor(head(h2))
        k1, k2 = self.target(v1), self.target(v2)                      # no_grad: keys carry no gradient
        loss, logits, targets = mocov3_loss(q1, q2, k1, k2, self.cfg.method.mocov3.temperature, self.cfg.loss.gather,
                                            return_logits=True)
        with torch.no_grad():
            top1 = (logits.argmax(dim=1) == targets).float().mean()
        return StepOutput(loss, torch.cat([h1, h2]), {"contrastive_top1": top1})
