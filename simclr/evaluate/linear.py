"""Linear probe on frozen features: standardise, multinomial logistic regression (full-batch L-BFGS).

Objective: mean cross-entropy + wd/2 * ||W||^2 (bias not decayed) — scikit-learn's
LogisticRegression with C = 1 / (wd * n_train). Weight decay is chosen on a validation split
carved from train, never on test; the final probe is refit on train + val. When the best value is
at an edge of the grid the grid is widened by factors of 10 (up to `wd_limits`), so the choice is
not an artefact of where the grid stopped; a choice still at a limit is flagged (`at_edge`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import logging

log = logging.getLogger("simclr")

DEFAULT_WD_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class ProbeSettings:
    wd_grid: tuple[float, ...] = DEFAULT_WD_GRID
    wd_limits: tuple[float, float] = (1e-9, 10.0)  # the grid widens up to these while the best is at an edge
    max_iter: int = 300
    val_fraction: float = 0.1   # used only when no validation split is given
    seed: int = 0


@dataclass(frozen=True)
class ProbeResult:
    top1: float
    top5: float
    weight_decay: float
    val_top1: dict[str, float] = field(default_factory=dict)
    at_edge: bool = False   # the chosen weight decay is still at an edge of the (widened) grid
    predictions: np.ndarray | None = None   # (Q,) the top-1 class per test image (top1 = its mean agreement)


def _standardise(train: torch.Tensor, *others: torch.Tensor):
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, max_iter: int = 300):
    """Multinomial logistic regression; returns (W (C, D), b (C,)). x: (N, D), y: (N,)."""
    w = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * wd * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _topk(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == y[:, None]).any(1).double().mean())


def linear_probe(train_x, train_y, test_x, test_y, val_x=None, val_y=None,
                 settings: ProbeSettings = ProbeSettings(), num_classes: int | None = None) -> ProbeResult:
    # float32: half the cost of float64 for L-BFGS on (N, D) features; within 1e-3 of sklearn (tests)
    train_x, test_x = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(test_x, dtype=torch.float32)
    train_y, test_y = torch.as_tensor(np.asarray(train_y), dtype=torch.int64), torch.as_tensor(np.asarray(test_y),
                                                                                             dtype=torch.int64)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if val_x is None or len(val_x) == 0:  # carve a seeded validation split from train
        g = torch.Generator().manual_seed(settings.seed)
        perm = torch.randperm(len(train_x), generator=g)
        n_val = max(1, int(settings.val_fraction * len(train_x)))
        val_x, val_y = train_x[perm[:n_val]], train_y[perm[:n_val]]
        train_x, train_y = train_x[perm[n_val:]], train_y[perm[n_val:]]
    val_x = torch.as_tensor(val_x, dtype=torch.float32)
    val_y = torch.as_tensor(np.asarray(val_y), dtype=torch.int64)

    tr, va = _standardise(train_x, val_x)
    scores: dict[str, float] = {}
    grid = sorted(settings.wd_grid)
    lo_limit, hi_limit = settings.wd_limits
    while True:
        for wd in grid:
            if f"{wd:g}" not in scores:
                w, b = fit_logistic(tr, train_y, num_classes, wd, settings.max_iter)
                scores[f"{wd:g}"] = _topk(va @ w.T + b, val_y, 1)
        best_wd = max(grid, key=lambda wd: (scores[f"{wd:g}"], wd))  # ties: stronger regularisation
        if best_wd == grid[-1] and grid[-1] * 10 <= hi_limit * (1 + 1e-9):
            grid.append(grid[-1] * 10)
        elif best_wd == grid[0] and len(grid) > 1 and grid[0] / 10 >= lo_limit * (1 - 1e-9):
            grid.insert(0, grid[0] / 10)
        else:
            break
    at_edge = len(grid) > 1 and best_wd in (grid[0], grid[-1])
    if at_edge:
        log.warning("linear probe: the chosen weight decay %g is at the edge of the searched grid %g..%g "
                    "(limits wd_limits=%s)", best_wd, grid[0], grid[-1], settings.wd_limits)
    full_x, full_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    full, te = _standardise(full_x, test_x)
    w, b = fit_logistic(full, full_y, num_classes, best_wd, settings.max_iter)
    logits = te @ w.T + b
    return ProbeResult(_topk(logits, test_y, 1), _topk(logits, test_y, 5), best_wd, scores, at_edge,
                       logits.topk(1, dim=1).indices[:, 0].numpy())
