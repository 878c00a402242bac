"""Weighted kNN on L2-normalised features, searched on the features' device (the only place faiss is imported).

Cosine similarity = inner product of unit vectors; votes are exp(sim / T) (Wu et al. 2018, as in
SimCLR/MoCo/lightly). Features on a GPU are searched there with a torch matmul + topk; features on the
CPU (NumPy arrays or CPU tensors) with `faiss.knn`, which measured 1.4x faster than the torch loop on
CPU (scripts/bench_knn.py, docs/benchmarks.md). Both stream queries in chunks, so peak memory is the
bank plus O(chunk * bank) on GPU, O(chunk * k) with faiss.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

DEFAULT_TEMPERATURE = 0.1


@dataclass(frozen=True)
class KNNResult:
    k: int
    temperature: float
    top1: float
    top5: float
    predictions: np.ndarray   # (Q,) class with the highest vote (lowest index wins ties)


def l2_normalize(x: np.ndarray | torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(bank: np.ndarray, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (Q, k), of the k most similar bank rows per query."""
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        d, i = faiss.knn(queries[start:start + chunk], bank, k, metric=faiss.METRIC_INNER_PRODUCT)
        sims.append(d)
        idx.append(i)
    return np.concatenate(sims), np.concatenate(idx)


def neighbours_torch(bank: torch.Tensor, queries: torch.Tensor, k: int,
                     chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """`neighbours` on the tensors' device: unit-norm float32 (N, D) bank and (Q, D) queries."""
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        d, i = (queries[start:start + chunk] @ bank.T).topk(k, dim=1)            # (q, k) each, sorted
        sims.append(d)
        idx.append(i)
    return torch.cat(sims).cpu().numpy(), torch.cat(idx).cpu().numpy()


def _on_accelerator(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type != "cpu"


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.detach().float(), dim=1, eps=1e-12)


def vote(sims: np.ndarray, idx: np.ndarray, bank_labels: np.ndarray, num_classes: int,
         temperature: float) -> np.ndarray:
    """(Q, C) class scores: sum over the k neighbours of exp(sim / T) into each neighbour's class."""
    weights = torch.from_numpy(np.exp(sims.astype(np.float64) / temperature))       # (Q, k)
    labels = torch.from_numpy(bank_labels[idx])                                    # (Q, k)
    scores = torch.zeros(len(sims), num_classes, dtype=torch.float64)
    scores.scatter_add_(1, labels, weights)
    return scores.numpy()


def knn_classify(bank_feats, bank_labels, query_feats, query_labels, k: int = 200,
                 temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None) -> KNNResult:
    bank_labels = np.asarray(bank_labels, dtype=np.int64)
    query_labels = np.asarray(query_labels, dtype=np.int64)
    if k > len(bank_labels):
        raise ValueError(f"k={k} exceeds the {len(bank_labels)} labelled bank (train) images; choose k <= "
                         f"{len(bank_labels)}.")
    num_classes = num_classes or int(max(bank_labels.max(), query_labels.max())) + 1
    if _on_accelerator(bank_feats):  # search where the features are; only (Q, k) results come back
        sims, idx = neighbours_torch(_unit(bank_feats), _unit(query_feats).to(bank_feats.device), k)
    else:
        sims, idx = neighbours(l2_normalize(bank_feats), l2_normalize(query_feats), k)
    scores = vote(sims, idx, bank_labels, num_classes, temperature)
    ranked = np.argsort(-scores, axis=1, kind="stable")                            # ties: lower class first
    top1 = float((ranked[:, 0] == query_labels).mean())
    top5 = float((ranked[:, :min(5, num_classes)] == query_labels[:, None]).any(axis=1).mean())
    return KNNResult(k, temperature, top1, top5, ranked[:, 0])
