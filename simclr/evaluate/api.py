"""`evaluate_run(...)`: the one evaluation entry point (CLI, ablation runner and users call it).

Every report has its floor beside it: the trained encoder, the same architecture at random init
(as initialised, and with its BN statistics recomputed on training images), and raw pixels — each
through the same kNN / linear protocols on the same splits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import simclr
from simclr.augment import eval_preprocess
from simclr.config.run import EVAL_PROTOCOLS as PROTOCOLS, LABELLED_PROTOCOLS, RunConfig, override_config
from simclr.config.schema import ConfigError, to_dict
from simclr.data import DataError, class_warnings, flat_tree, make_splits, test_split_record
from simclr.evaluate.checkpoint import LoadedRun, build_encoder, load_run, recompute_bn_statistics
from simclr.evaluate.diagnostics import (DIAGNOSTIC_SEEDS, alignment, balanced_sample, invariance_profile,
                                         positive_pair_features, rankme, uniformity)
from simclr.evaluate.features import extract_features
from simclr.evaluate.knn import knn_classify
from simclr.evaluate.linear import ProbeSettings, linear_probe
from simclr.evaluate.records import binomial_se, check_csv, format_table, new_eval_dir, per_image_record, write_records
from simclr.runs import layout
from simclr.runs.directory import read_record
from simclr.utils import git_commit, torch_save_atomic

log = logging.getLogger("simclr")
DIAGNOSTIC_IMAGES = 1000


def _with_overrides(cfg: RunConfig, data_path, dataset, overrides: Sequence[str]) -> RunConfig:
    extra = list(overrides)
    for item in extra:
        key = item.split("=", 1)[0]
        if not (key.startswith(("data.", "eval.")) or key == "seed"):
            raise ConfigError(f"evaluate override '{item}': only data.*, eval.* and seed can change at evaluation.")
    if dataset:
        extra.append(f"data.name={dataset}")
    if data_path:
        extra.append(f"data.path={data_path}")
    return override_config(cfg, extra)


def _check_compatible(run: LoadedRun, cfg: RunConfig, splits, protocols: Sequence[str]) -> None:
    images = splits["train"].images
    if images.shape[1] != run.in_channels:
        raise DataError(f"data ({cfg.data.name}, {cfg.data.path}): images have {images.shape[1]} channels but the "
                        f"encoder in {run.checkpoint} was trained on {run.in_channels}.")
    if run.image_size and images.shape[-1] != run.image_size:
        raise DataError(f"data ({cfg.data.name}): images are {images.shape[-1]}px but {run.checkpoint} was trained "
                        f"on {run.image_size}px; pass data.image_size={run.image_size} to resize them.")
    classes = len(splits["train"].classes)
    if cfg.data.name == run.cfg.data.name and classes != run.num_classes:
        raise DataError(f"data ({cfg.data.path}): {classes} classes, but the run was trained on {cfg.data.name} with "
                        f"{run.num_classes}; is this the right dataset path?")
    labelled = int((splits["train"].labels >= 0).sum())
    needs_labels = [p for p in protocols if p in LABELLED_PROTOCOLS]
    if needs_labels and not labelled:
        raise ConfigError(f"data.train_split: '{cfg.data.train_split}' has no labelled images, and {needs_labels} fit "
                          "on labelled training images; evaluate with data.train_split=train (or train+unlabeled).")
    too_big = [k for k in cfg.eval.knn_k if k > labelled] if "knn" in protocols else []
    if too_big:
        raise ConfigError(f"eval.knn_k: k={too_big[0]} exceeds the {labelled} labelled training images; lower "
                          "eval.knn_k or use more data.")


def _cache_key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _cached_features(encoder, splits, pre, cache: Path | None, key: str) -> dict[str, torch.Tensor]:
    out = {}
    for split, data in splits.items():
        path = cache / f"{key}-{split}.pt" if cache else None
        if path is not None and path.exists():
            try:
                out[split] = torch.load(path, weights_only=True)
                continue
            except Exception:  # a corrupt cache file is recomputed, never trusted
                path.unlink(missing_ok=True)
        out[split] = extract_features(encoder, data, pre, progress=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch_save_atomic(out[split], path)
    return out


def effective_k(requested: Sequence[int], bank_labels) -> dict[int, int]:
    """k -> the k used: at most the smallest class's labelled bank size, so that a perfect representation
    could fill every vote from its own class (a k above that makes kNN vote across classes by design)."""
    counts = torch.bincount(torch.as_tensor(bank_labels)[torch.as_tensor(bank_labels) >= 0])
    per_class = int(counts[counts > 0].min())
    capped = {k: min(k, per_class) for k in requested}
    for k, used in capped.items():
        if used != k:
            log.warning("kNN: k=%d exceeds the smallest class's %d labelled bank images; using k=%d "
                        "(stored as metrics knn_k%d.k)", k, per_class, used, k)
    return capped


def _protocols(feats, splits, cfg: RunConfig, protocols, probe: ProbeSettings, device: str = "cpu",
               correct: dict | None = None) -> dict:
    """`device`: where kNN searches (the encoder's; a GPU searches with torch, the CPU with faiss). `correct`,
    when given, receives each protocol's (n_test,) bool top-1 correctness (results.json's per_image)."""
    labels = {s: d.labels.numpy() for s, d in splits.items()}
    keep = labels["train"] >= 0
    num_classes = len(splits["train"].classes)
    n_test = len(labels["test"])
    result: dict[str, dict] = {}
    hits: dict[str, np.ndarray] = {}
    if "knn" in protocols:
        for k, used in effective_k(cfg.eval.knn_k, labels["train"]).items():
            r = knn_classify(feats["train"][keep].to(device), labels["train"][keep], feats["test"].to(device),
                             labels["test"], used, cfg.eval.knn_temperature, num_classes)
            result[f"knn_k{k}"] = {"top1": r.top1, "top1_se": binomial_se(r.top1, n_test), "top5": r.top5, "k": used}
            hits[f"knn_k{k}"] = r.predictions == labels["test"]
    if "linear" in protocols:
        r = linear_probe(feats["train"][keep], labels["train"][keep], feats["test"], labels["test"],
                         feats["val"], labels["val"], probe, num_classes)
        result["linear"] = {"top1": r.top1, "top1_se": binomial_se(r.top1, n_test), "top5": r.top5,
                            "weight_decay": r.weight_decay, "wd_searched": sorted(float(w) for w in r.val_top1),
                            "wd_at_edge": r.at_edge}
        hits["linear"] = r.predictions == labels["test"]
    if correct is not None:
        correct.update(hits)
    return result


def evaluate_run(target: str | Path, protocols: Sequence[str] = ("knn", "linear"), data_path: str | None = None,
                 dataset: str | None = None, plot: bool = False, baselines: bool = True,
                 overrides: Sequence[str] = (), probe: ProbeSettings = ProbeSettings(), quiet: bool = False) -> dict:
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"--protocol: unknown '{unknown[0]}'; valid: {', '.join(PROTOCOLS)}.")
    run = load_run(target)
    root = layout.eval_dir(run.run_dir) if run.run_dir else run.checkpoint.parent / f"eval-{run.checkpoint.stem}"
    csv_path = (run.run_dir or root) / "results.csv"
    check_csv(csv_path)  # before any work: results go nowhere unchecked
    cfg = _with_overrides(run.cfg, data_path, dataset, overrides)
    _check_same_holdout(run, cfg)
    splits = make_splits(dataclasses.replace(cfg.data, batch_size=2), cfg.seed)
    test_split = test_split_record(cfg.data, splits["test"])
    _check_compatible(run, cfg, splits, protocols)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pre = eval_preprocess(run.policy)
    encoders = _encoders(run, cfg, splits, pre, device, _data_key(cfg, test_split), baselines)
    metrics, correct = _measure(run, cfg, splits, pre, device, encoders, protocols, probe, baselines)
    eval_dir = new_eval_dir(root)
    settings = _settings(run, cfg, splits, protocols, probe, baselines, list(encoders), test_split)
    for warning in settings["warnings"]:
        log.warning("warning: %s (%s)", warning, cfg.data.path or cfg.data.name)
    out = write_records(eval_dir, csv_path, metrics, settings,
                        per_image_record(correct, splits["test"].labels.numpy()) if correct else None)
    if plot and "diagnostics" in metrics["simclr"]:
        from simclr.evaluate.plots import plot_invariance
        plot_invariance({k: {op: r["cosine"] for op, r in v["diagnostics"]["invariance"].items()}
                         for k, v in metrics.items() if "diagnostics" in v},
                        eval_dir / "invariance.png", title=f"{run.policy.name} — {cfg.data.name}")
    elif plot:
        log.warning("--plot needs the diagnostics protocol; add it to --protocol")
    if not quiet:
        print(format_table(metrics, trained=run.cfg.method.name))
        print(f"wrote {out}")
    return {"metrics": metrics, "settings": settings, "eval_dir": eval_dir}


def _data_key(cfg: RunConfig, test_split: dict) -> tuple:
    """What the features of an encoder depend on besides its weights: the feature cache's key."""
    key = (cfg.data.name, cfg.data.path, cfg.data.train_split, cfg.data.train_per_class, cfg.data.val_per_class,
           cfg.data.test_per_class, cfg.data.image_size, cfg.seed)
    if flat_tree(cfg.data):  # the held-out draw decides which images are train and test: features cached before
        key += ("holdout", test_split["fraction"], test_split["seed"])  # it (train = test) are not reused
    if cfg.data.loader == "stream":  # another train split (a per-class subset): never the in-memory path's features
        key += ("stream", cfg.data.stream_eval_per_class)
    return key


def _encoders(run: LoadedRun, cfg: RunConfig, splits, pre, device: str, data_key: tuple, baselines: bool) -> dict:
    """name -> (encoder, feature cache key): the trained one and, with baselines, the random-init floors."""
    encoders = {"simclr": (build_encoder(run).to(device), _cache_key(run.checkpoint_sha256, *data_key))}
    if baselines:
        encoders["random_init"] = (build_encoder(run, random_init=True, seed=cfg.seed).to(device),
                                   _cache_key("random", run.cfg.model, run.in_channels, cfg.seed, *data_key))
        # BN statistics of a random network are those of its init (0/1), not of images: recompute them
        # on the training images so the floor is not biased low by stale normalisation
        bn_encoder = recompute_bn_statistics(build_encoder(run, random_init=True, seed=cfg.seed).to(device),
                                             splits["train"], pre)
        encoders["random_init_bn"] = (bn_encoder, _cache_key("random-bn", run.cfg.model, run.in_channels,
                                                             cfg.seed, *data_key))
    return encoders


def _measure(run: LoadedRun, cfg: RunConfig, splits, pre, device: str, encoders: dict, protocols: Sequence[str],
             probe: ProbeSettings, baselines: bool) -> tuple[dict, dict]:
    """(metrics[encoder][protocol], correct[encoder][protocol] = each test image's top-1 hit) for every encoder,
    and raw pixels with baselines."""
    cache = layout.features_dir(run.run_dir) if run.run_dir else None
    metrics: dict[str, dict] = {}
    correct: dict[str, dict] = {}
    for name, (encoder, key) in encoders.items():
        feats = _cached_features(encoder, splits, pre, cache, key)
        metrics[name] = _protocols(feats, splits, cfg, protocols, probe, device, correct.setdefault(name, {}))
        if "diagnostics" in protocols:
            metrics[name]["diagnostics"] = _diagnostics(encoder, feats, splits, run, cfg)
    if baselines:
        pixels = {s: pre(d.images).flatten(1) for s, d in splits.items()}
        metrics["raw_pixels"] = _protocols(pixels, splits, cfg, [p for p in protocols if p != "diagnostics"], probe,
                                           device, correct.setdefault("raw_pixels", {}))
    return metrics, {enc: c for enc, c in correct.items() if c}


def _settings(run: LoadedRun, cfg: RunConfig, splits, protocols: Sequence[str], probe: ProbeSettings,
              baselines: bool, encoders: list[str], test_split: dict) -> dict:
    """Every setting the numbers depend on, stored beside them in results.json (only those of protocols that ran)."""
    settings: dict = {"protocols": list(protocols)}
    if "knn" in protocols:
        settings["knn"] = {"k": list(cfg.eval.knn_k), "temperature": cfg.eval.knn_temperature, "metric": "cosine",
                           "weighting": "exp(sim/T)", "bank": "train split",
                           "k_used": {str(k): v for k, v in effective_k(cfg.eval.knn_k,
                                                                         splits["train"].labels.numpy()).items()},
                           "k_cap": "smallest class's labelled bank size"}
    if "linear" in protocols:
        settings["linear"] = {**dataclasses.asdict(probe),
                              "objective": "mean CE + wd/2 ||W||^2, L-BFGS, standardised features",
                              "selection": "best val top-1 (grid widened x10 while the best is at an edge, "
                                           "within wd_limits), refit on train+val"}
    if "diagnostics" in protocols:
        settings["diagnostics"] = {"sample": f"{DIAGNOSTIC_IMAGES} test images, class-balanced, seeded by the run "
                                             "seed", "invariance_seeds": DIAGNOSTIC_SEEDS,
                                   "invariance_params": "the policy's own op parameters (p=1); registry defaults "
                                                        "for ops the policy lacks",
                                   "encoders": encoders}
    if baselines:
        settings["baselines"] = {"random_init": "same architecture, seeded init, BN statistics as initialised",
                                 "random_init_bn": "same init, BN running statistics recomputed on the train split",
                                 "raw_pixels": "preprocessed pixels, flattened"}
    settings.update({
        "data": {**to_dict(cfg.data), "split_sizes": {s: len(d) for s, d in splits.items()}}, "test_split": test_split,
        "seed": cfg.seed, "preprocess": "uint8/255 -> resize to policy crop size -> policy normalize",
        "checkpoint": {"path": str(run.checkpoint), "sha256": run.checkpoint_sha256},
        "model": to_dict(run.cfg.model), "method": to_dict(run.cfg.method), "policy": run.policy.to_dict(),
        "package_version": simclr.__version__, "git_commit": git_commit(), "torch": torch.__version__,
        "warnings": class_warnings(splits) + _unfinished_run_warning(run) + _unrecorded_holdout_warning(run, cfg),
    })
    return settings


def _unfinished_run_warning(run: LoadedRun) -> list[str]:
    """A run stopped early (Ctrl-C, kill, a failed job) is evaluated as asked, but its numbers say so."""
    status = (read_record(run.run_dir) if run.run_dir else None) or {}
    if status.get("status", "finished") == "finished":
        return []
    return [f"the run is '{status['status']}' after {status.get('epoch', '?')} of {run.cfg.trainer.max_epochs} "
            f"epochs: these numbers are of a partially trained encoder (finish it with simclr pretrain --resume "
            f"{run.run_dir})"]


def _check_same_holdout(run: LoadedRun, cfg: RunConfig) -> None:
    """Evaluated on the run's own flat tree, the test split must be the one its pretraining never saw."""
    same_data = (cfg.data.name, cfg.data.path) == (run.cfg.data.name, run.cfg.data.path)
    if same_data and cfg.data.holdout_fraction != run.cfg.data.holdout_fraction and flat_tree(cfg.data):
        raise ConfigError(f"data.holdout_fraction: the run held out {run.cfg.data.holdout_fraction} of each class of "
                          f"{cfg.data.path} as its test split; evaluating with {cfg.data.holdout_fraction} would draw "
                          "another split, with images pretraining saw among the test images. Drop the override.")


def _unrecorded_holdout_warning(run: LoadedRun, cfg: RunConfig) -> list[str]:
    """A run on a flat tree whose run.json records no test_split began before such trees had a held-out test
    split: its pretraining saw the images it is now tested on (its probes did not)."""
    status = read_record(run.run_dir) if run.run_dir else None
    same_data = (cfg.data.name, cfg.data.path) == (run.cfg.data.name, run.cfg.data.path)
    if not isinstance(status, dict) or "test_split" in status or not same_data or not flat_tree(cfg.data):
        return []
    return [f"the run pretrained on every image of the flat tree {cfg.data.path} (its run.json records no "
            "test_split: it began before flat trees had a held-out test split), so the encoder has seen these test "
            "images; the probes have not. Retrain for a clean test"]


def _diagnostics(encoder, feats, splits, run: LoadedRun, cfg: RunConfig) -> dict:
    """On a seeded, class-balanced test sample (the first N of a class-sorted split would cover only a
    few classes)."""
    idx = balanced_sample(splits["test"].labels, DIAGNOSTIC_IMAGES, seed=cfg.seed)
    sample = splits["test"].subset(idx)
    z1, z2 = positive_pair_features(encoder, sample, run.policy, seed=cfg.seed)
    small = balanced_sample(sample.labels, 500, seed=cfg.seed)
    return {"alignment": alignment(z1, z2), "uniformity": uniformity(feats["test"][idx]),
            "rankme": rankme(feats["test"][idx]), "images": len(idx),
            "invariance": invariance_profile(encoder, sample.subset(small), run.policy, seed=cfg.seed)}
