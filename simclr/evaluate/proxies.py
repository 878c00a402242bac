"""Selection objectives for policy search: scored on training data only, never on the test split.

* `knn_val_top1`: kNN top-1 of the validation split carved from train (labels needed), against the
  labelled training images as bank — the kNN monitor's protocol, on the final encoder.
* `rankme`: Garrido et al. (2023), label-free: effective rank of the frozen features of unaugmented
  training images (`diagnostics.rankme`).
* `rotation_acc`: label-free and augmentation-independent (SelfAugment, Reed et al. 2021): how well
  a fixed linear probe on frozen features predicts which of 0/90/180/270 degrees an unaugmented
  image was turned by. The probe, its weight decay, the images and the held-out half are the same
  for every trial, so only the encoder differs. Caveat (by construction): it rewards encoders that
  keep orientation, so it penalises rotation invariance even on data where that would be harmless.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from simclr.augment import eval_preprocess
from simclr.data import ImageData, make_splits
from simclr.evaluate.checkpoint import build_encoder, load_run
from simclr.evaluate.diagnostics import rankme
from simclr.evaluate.features import extract_features
from simclr.evaluate.knn import knn_classify
from simclr.evaluate.linear import fit_logistic
from simclr.runs.layout import last_checkpoint

OBJECTIVES = ("knn_val_top1", "rankme", "rotation_acc")
LABEL_FREE = ("rankme", "rotation_acc")
ROTATION_PROBE_WD = 1e-3      # fixed: one probe for every trial, no per-trial tuning
ROTATION_PROBE_ITERS = 200


def _seeded_subset(data: ImageData, n: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return data.subset(torch.sort(torch.randperm(len(data), generator=g)[:n]).values)


def rotation_prediction(encoder: torch.nn.Module, images: ImageData, preprocess, seed: int = 0) -> float:
    """4-way rotation accuracy of a fixed logistic probe on frozen features: fit on a seeded half of
    `images` (each in all four rotations), scored on the other half (different images)."""
    if images.images.shape[-1] != images.images.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(images.images.shape[-2:])}")
    if len(images) < 4:
        raise ValueError(f"rotation prediction needs at least 4 images, got {len(images)}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    halves = perm[: len(perm) // 2], perm[len(perm) // 2:]

    def rotated_features(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.images[index]
        turned = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])   # (4N, C, H, W)
        y = torch.arange(4).repeat_interleave(len(x))
        feats = extract_features(encoder, ImageData(turned.contiguous(), y, ("0", "90", "180", "270")), preprocess)
        return feats, y

    fx, fy = rotated_features(halves[0])
    tx, ty = rotated_features(halves[1])
    mean, std = fx.mean(0, keepdim=True), fx.std(0, keepdim=True).clamp_min(1e-6)
    w, b = fit_logistic((fx - mean) / std, fy, 4, ROTATION_PROBE_WD, ROTATION_PROBE_ITERS)
    return float((((tx - mean) / std @ w.T + b).argmax(1) == ty).double().mean())


def selection_metrics(run_dir: str | Path, max_images: int = 1000, splits: dict[str, ImageData] | None = None) -> dict:
    """Every selection objective of the run's final encoder (checkpoints/last.ckpt: best.ckpt is chosen with
    labels, which a label-free objective must not see). `knn_val_top1` is None when there is no labelled
    validation split. Also returns the settings used, for the record."""
    run = load_run(last_checkpoint(run_dir))
    cfg = run.cfg
    if splits is None:
        splits = make_splits(dataclasses.replace(cfg.data, batch_size=2), cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = build_encoder(run).to(device)
    pre = eval_preprocess(run.policy)
    train, val = splits["train"], splits["val"]
    label_free = _seeded_subset(train, max_images, cfg.seed + 3)
    out: dict = {"rankme": rankme(extract_features(encoder, label_free, pre)),
                 "rotation_acc": rotation_prediction(encoder, label_free, pre, seed=cfg.seed + 4),
                 "knn_val_top1": None}
    labelled = train.labels >= 0
    if len(val) and bool(labelled.any()):
        bank = train.subset(labelled.nonzero().squeeze(1))
        res = knn_classify(extract_features(encoder, bank, pre), bank.labels.numpy(),
                           extract_features(encoder, val, pre), val.labels.numpy(),
                           min(cfg.eval.monitor_k, len(bank)), cfg.eval.knn_temperature, len(train.classes))
        out["knn_val_top1"] = res.top1
    out["settings"] = {"checkpoint": str(run.checkpoint), "label_free_images": len(label_free),
                       "knn": {"k": min(cfg.eval.monitor_k, int(labelled.sum())), "temperature": cfg.eval.knn_temperature,
                               "bank": "train (labelled)", "query": "val (carved from train)"},
                       "rotation_probe": {"weight_decay": ROTATION_PROBE_WD, "max_iter": ROTATION_PROBE_ITERS,
                                          "split": "seeded half of the images fit, other half scored"}}
    return out

