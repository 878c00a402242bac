"""Frozen-feature evaluation: kNN (faiss), linear probe, baselines, diagnostics, the kNN monitor.
The only room that imports faiss."""
from simclr.evaluate.api import evaluate_run
from simclr.evaluate.knn import knn_classify
from simclr.evaluate.linear import linear_probe

__all__ = ["evaluate_run", "knn_classify", "linear_probe"]
