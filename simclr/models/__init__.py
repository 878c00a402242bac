"""Backbones (a registry) and the projection head."""
from simclr.models.backbones import BACKBONES, Encoder, check_fits
from simclr.models.head import ProjectionHead

__all__ = ["BACKBONES", "Encoder", "ProjectionHead", "check_fits"]
