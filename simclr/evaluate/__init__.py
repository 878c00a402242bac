"""Frozen-feature evaluation: kNN (faiss on CPU, torch on GPU), linear probe, baselines, diagnostics, the kNN
monitor, loading and exporting runs. The only room that imports faiss."""
from simclr.evaluate.api import evaluate_run
from simclr.evaluate.checkpoint import build_encoder, load_run
from simclr.evaluate.export import export_run
from simclr.evaluate.knn import knn_classify
from simclr.evaluate.linear import linear_probe

__all__ = ["evaluate_run", "build_encoder", "load_run", "export_run", "knn_classify", "linear_probe"]
