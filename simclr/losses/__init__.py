"""Contrastive losses."""
from simclr.losses.ntxent import NTXentLoss, nt_xent

__all__ = ["NTXentLoss", "nt_xent"]
