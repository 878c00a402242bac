"""Augmentation ablations: specs, arm generators, the runner, reports."""
from simclr.ablate.report import report
from simclr.ablate.runner import run_ablation
from simclr.ablate.spec import generate_arms, load_spec

__all__ = ["report", "run_ablation", "generate_arms", "load_spec"]
