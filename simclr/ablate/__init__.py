"""Augmentation ablations: specs, arm generators, the per-arm runner, launchers (inline, local, SLURM), status, reports."""
from simclr.ablate.report import report
from simclr.ablate.launch import run_ablation
from simclr.ablate.arms import generate_arms
from simclr.ablate.spec import load_spec

__all__ = ["report", "run_ablation", "generate_arms", "load_spec"]
