"""The LightningModule and its optimisers."""
from simclr.module.simclr_module import SimCLRModule

__all__ = ["SimCLRModule"]
