"""Loading an encoder back from a run directory or a .ckpt file, safely and with clear errors."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from simclr.augment import policy_from_dict
from simclr.augment.policy import Policy, input_size
from simclr.config.run import RunConfig, config_from_dict, load_config
from simclr.config.schema import ConfigError
from simclr.models import Encoder
from simclr.runs.checkpoints import read_checkpoint
from simclr.runs.layout import BEST, CHECKPOINTS, LAST, best_checkpoint, config_path, last_checkpoint, run_dir_of


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, or does not fit the expected architecture."""


@dataclass(frozen=True)
class LoadedRun:
    checkpoint: Path
    checkpoint_sha256: str
    run_dir: Path | None
    cfg: RunConfig
    policy: Policy
    in_channels: int
    num_classes: int
    image_size: int | None
    encoder_state: dict


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(target: str | Path) -> tuple[Path, Path | None]:
    target = Path(target)
    if target.is_dir():
        for ckpt in (best_checkpoint(target), last_checkpoint(target)):
            if ckpt.is_file():
                return ckpt, target
        raise CheckpointError(f"{target}: no {CHECKPOINTS}/{BEST} or {CHECKPOINTS}/{LAST} in this run directory.")
    if not target.is_file():
        raise CheckpointError(f"{target}: no such run directory or checkpoint file.")
    return target, run_dir_of(target)


def _check_belongs(ckpt: Path, run_dir: Path | None, cfg) -> None:
    """A checkpoint inside a run folder must be that run's: its model is the one the run's config.yaml records
    (a checkpoint copied in from another run would be evaluated and filed as this run's)."""
    recorded = config_path(run_dir) if run_dir is not None else None
    if recorded is None or not recorded.is_file():
        return
    try:
        model = load_config(recorded, stored=True).model
    except ConfigError:  # a damaged config.yaml is reported where the run is resumed; the weights decide here
        return
    if model != cfg.model:
        diff = [f"{k}: {getattr(cfg.model, k)!r} in the checkpoint, {getattr(model, k)!r} in config.yaml"
                for k in model.__dataclass_fields__ if getattr(model, k) != getattr(cfg.model, k)]
        raise CheckpointError(f"{ckpt}: not this run's checkpoint ({'; '.join(diff[:3])}); it was trained by "
                              "another run. Evaluate that run, or the .ckpt file itself outside this folder.")


def load_run(target: str | Path) -> LoadedRun:
    ckpt, run_dir = resolve_checkpoint(target)
    blob = read_checkpoint(ckpt, CheckpointError, "be read as a simclr checkpoint")
    if not isinstance(blob, dict) or "state_dict" not in blob or "hyper_parameters" not in blob:
        raise CheckpointError(f"{ckpt}: not a simclr checkpoint (expected keys state_dict and hyper_parameters).")
    hp = blob["hyper_parameters"]
    try:
        cfg = config_from_dict(hp["config"])
        policy = policy_from_dict(hp["policy"], f"{ckpt}:policy")
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{ckpt}: hyper_parameters are not a simclr run config: {e}") from None
    _check_belongs(ckpt, run_dir, cfg)
    state = {k.removeprefix("encoder."): v for k, v in blob["state_dict"].items() if k.startswith("encoder.")}
    broken = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
              and not bool(torch.isfinite(v).all())]
    if broken:  # NaN weights give NaN features, or none at all where a kernel skips them: never a number
        raise CheckpointError(f"{ckpt}: encoder weight {broken[0]} holds NaN or infinite values"
                              f"{f' (and {len(broken) - 1} more)' if len(broken) > 1 else ''}; the run diverged or "
                              "the file is damaged - evaluate an earlier checkpoint, or retrain.")
    return LoadedRun(ckpt, sha256_file(ckpt), run_dir, cfg, policy, int(hp["in_channels"]), int(hp["num_classes"]),
                     hp.get("image_size"), state)


def build_encoder(run: LoadedRun, random_init: bool = False, seed: int = 0) -> Encoder:
    """The run's encoder with its trained weights, or (random_init) the same architecture, freshly seeded."""
    m = run.cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(m.backbone, in_channels=run.in_channels, cifar_stem=m.cifar_stem, width=m.width,
                          image_size=input_size(run.policy, run.image_size))
    if random_init:
        return encoder
    try:
        result = encoder.load_state_dict(run.encoder_state, strict=False)
    except RuntimeError as e:  # shape mismatches: another width/stem/backbone
        raise CheckpointError(f"{run.checkpoint}: encoder weights do not fit backbone '{m.backbone}': "
                              f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{run.checkpoint}: encoder weights do not fit backbone '{m.backbone}' "
                              f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}).")
    return encoder


@torch.no_grad()
def recompute_bn_statistics(encoder: Encoder, images, preprocess, batch_size: int = 512) -> Encoder:
    """Set every BatchNorm's running mean/var to the average of its per-batch statistics over `images`
    (ImageData, uint8; preprocessed, no augmentation) — what BN would hold after seeing the data — and
    return the encoder in eval mode. Weights are untouched."""
    from simclr.data import batch_loader

    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight for every batch
    device = next(encoder.parameters()).device
    encoder.train()
    for batch, _ in batch_loader(images, batch_size):
        encoder(preprocess(batch.to(device)))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return encoder.eval()
