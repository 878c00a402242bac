"""Backbones (a registry) and the projection head."""
from simclr.models.backbones import BACKBONES, Encoder
from simclr.models.head import ProjectionHead

__all__ = ["BACKBONES", "Encoder", "ProjectionHead"]
