"""Self-supervised methods behind the one LightningModule: a registry, one small module per method.

    simclr  NT-Xent on two views (loss.temperature)                     simclr.methods.simclr
    byol    predictor + EMA target, normalised MSE (method.byol.*)       simclr.methods.byol
    vicreg  variance / invariance / covariance (method.vicreg.*)         simclr.methods.vicreg
    mocov3  predictor + momentum encoder, InfoNCE (method.mocov3.*)      simclr.methods.mocov3

A new method: subclass `Method` (or `MomentumMethod`), decorate it with `register`, import it here, and add its
name and parameter section to simclr.config.run.MethodConfig (tests/test_methods.py checks the two agree).
"""
from simclr.methods import byol, mocov3, simclr, vicreg  # noqa: F401  (registers the methods)
from simclr.methods.base import METHODS, Method, MomentumMethod, StepOutput, cosine_momentum, ema_update, register

__all__ = ["METHODS", "Method", "MomentumMethod", "StepOutput", "cosine_momentum", "ema_update", "register"]
