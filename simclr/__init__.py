"""simclr: SimCLR pretraining with declarative on-device augmentation policies."""
__version__ = "0.1.0"
