"""The LightningModule, its optimisers and the throughput callback."""
from simclr.module.simclr_module import SimCLRModule
from simclr.module.throughput import Throughput

__all__ = ["SimCLRModule", "Throughput"]
