"""The LightningModule, its optimisers, the throughput callback and what the machine can run (devices)."""
from simclr.module.simclr_module import SimCLRModule, SSLModule
from simclr.module.throughput import EpochRate, Throughput, cpu_state, load_avg

__all__ = ["EpochRate", "SSLModule", "SimCLRModule", "Throughput", "cpu_state", "load_avg"]
