"""Augmentation-policy search with Optuna: specs, trials, the study loop, outputs, and the best-vs-base
comparison on test (an ordinary ablation: this package stands above simclr.ablate and calls it)."""
from simclr.search.spec import SearchSpec, load_search_spec
from simclr.search.study import run_search

__all__ = ["SearchSpec", "load_search_spec", "run_search"]
