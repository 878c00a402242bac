"""VICReg (Bardes et al. 2022): one encoder and expander for both views; invariance (MSE) keeps the views'
embeddings together, variance (a hinge on each dimension's std) and covariance (off-diagonal entries) keep them
from collapsing. Variance and covariance are batch statistics over all devices with loss.gather.

Each view goes through the networks on its own, as in the reference implementation; the expander (the head)
ends at its Linear (no output BN: the variance term must see the raw scale).
"""
from __future__ import annotations

import torch

from simclr.losses import vicreg_loss
from simclr.methods.base import Method, StepOutput, register


@register
class VICReg(Method):
    name = "vicreg"
    projector_last_bn = False

    def step(self, encode, head, v1, v2):
        p = self.cfg.method.vicreg
        h1, h2 = encode(v1), encode(v2)
        z1, z2 = head(h1), head(h2)
        loss, (inv, var, cov) = vicreg_loss(z1, z2, p.sim_coeff, p.std_coeff, p.cov_coeff, self.cfg.loss.gather,
                                            return_terms=True)
        logs = {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
        return StepOutput(loss, torch.cat([h1, h2]), logs)
