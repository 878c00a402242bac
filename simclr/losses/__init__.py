"""The methods' losses: NT-Xent (SimCLR), BYOL's, VICReg's and MoCo v3's."""
from simclr.losses.byol import byol_loss
from simclr.losses.mocov3 import mocov3_loss
from simclr.losses.ntxent import NTXentLoss, nt_xent
from simclr.losses.vicreg import vicreg_loss

__all__ = ["NTXentLoss", "byol_loss", "mocov3_loss", "nt_xent", "vicreg_loss"]
