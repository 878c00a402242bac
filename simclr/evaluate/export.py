"""Backbone weights out of a run, for torchvision, timm or simclr itself (`simclr export RUN`).

The ResNets *are* torchvision ResNets with `fc = Identity()`, and timm's ResNets use the same parameter
names, so both formats are the encoder's state dict without the `net.` prefix. Load them with:

    model = torchvision.models.resnet18(weights=None)            # timm: timm.create_model("resnet18",
    model.fc = torch.nn.Identity()                               #       num_classes=0, in_chans=C)
    # CIFAR stem (cifar_stem: true): a 3x3 stride-1 conv1 for C channels and no max-pool
    model.conv1 = torch.nn.Conv2d(C, 64, 3, 1, 1, bias=False); model.maxpool = torch.nn.Identity()
    # standard stem with C != 3 channels (torchvision only; timm's in_chans=C does it): keep the 7x7 conv
    model.conv1 = torch.nn.Conv2d(C, 64, 7, 2, 3, bias=False)
    model.load_state_dict(torch.load("backbone.pth", weights_only=True))

`timm:<name>` backbones are timm models: `--format timm` writes their state dict for
`timm.create_model(**meta["create_model"])`.

A JSON file next to the weights records the architecture, the input preprocessing (the policy's
resize and normalize) and the checkpoint it came from; with --format timm also `create_model` (the
arguments of timm.create_model) and `pretrained_cfg`, the run's preprocessing in timm's terms, so that
`timm.create_model(..., pretrained_cfg_overlay=meta["pretrained_cfg"])` makes timm.data.resolve_data_config
return the run's input size, mean, std and interpolation rather than ImageNet's 224 px defaults.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from simclr.augment.policy import input_size
from simclr.config.backbone import TIMM_PREFIX
from simclr.config.schema import ConfigError, to_dict
from simclr.evaluate.checkpoint import LoadedRun, build_encoder, load_run
from simclr.models import Encoder
from simclr.models.timm_backbone import create_args

FORMATS = ("torchvision", "timm", "state_dict")
RESNETS = ("resnet18", "resnet34", "resnet50")


def backbone_state(encoder: Encoder, fmt: str) -> dict[str, torch.Tensor]:
    """The weights in `fmt`: torchvision/timm parameter names (ResNets; timm backbones: timm only), or simclr's
    Encoder names."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}.")
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if fmt == "state_dict":
        return state  # simclr.models.Encoder(...).load_state_dict(...)
    from_timm = encoder.name.startswith(TIMM_PREFIX)
    if encoder.name not in RESNETS and not (from_timm and fmt == "timm"):
        raise ConfigError(f"--format {fmt}: backbone '{encoder.name}' has no {fmt} counterpart; use --format "
                          f"{'timm or ' if from_timm else ''}state_dict (loads into simclr.models.Encoder).")
    return {k.removeprefix("net."): v for k, v in state.items()}


def timm_description(run: LoadedRun, normalize: dict | None) -> dict:
    """`create_model`: timm.create_model's arguments for this backbone; `pretrained_cfg`: the run's evaluation
    preprocessing as timm's data config (simclr.augment.eval_preprocess: resize to the side, no crop,
    bilinear, the policy's normalize; its mean/std repeated per channel where the policy gives one value)."""
    m, c = run.cfg.model, run.in_channels
    side = input_size(run.policy, run.image_size)
    from_timm = m.backbone.startswith(TIMM_PREFIX)
    args = create_args(m.backbone.removeprefix(TIMM_PREFIX), c, side if from_timm else None)
    normalize = normalize or {"mean": [0.0], "std": [1.0]}  # a policy without normalize: [0, 1] inputs

    def per_channel(values) -> list[float]:
        return list(values) * c if len(values) == 1 else list(values)
    cfg = {"mean": per_channel(normalize["mean"]), "std": per_channel(normalize["std"]),
           "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}
    if side is not None:  # a checkpoint that records no image size (and no crop) leaves timm's default
        cfg["input_size"] = [c, side, side]
    return {"create_model": args, "pretrained_cfg": cfg}


def _describe(run: LoadedRun, fmt: str, out: Path) -> dict:
    m = run.cfg.model
    view = run.policy.views[0]
    norm = [to_dict(o.params) for o in view if o.name == "normalize"]
    c = run.in_channels
    stem = (f"3x3 stride-1 conv1, no max-pool: before loading set model.conv1 = Conv2d({c}, 64, 3, 1, 1, "
            "bias=False) and model.maxpool = Identity()" if m.cifar_stem else
            "standard 7x7 stem" + ("" if c == 3 else f" on {c} channel(s): before loading set model.conv1 = "
                                   f"Conv2d({c}, 64, 7, 2, 3, bias=False) (timm: in_chans={c})"))
    return {
        "format": fmt, "weights": out.name, "backbone": m.backbone, "in_channels": run.in_channels,
        "cifar_stem": m.cifar_stem if m.backbone in RESNETS else None, "stem": stem if m.backbone in RESNETS else None,
        "width": m.width if m.backbone == "small_cnn" else None,
        "classifier": "none (num_classes=0): features out" if m.backbone.startswith(TIMM_PREFIX) else
                      "none (fc = Identity): features out",
        "preprocess": {"scale": "uint8 / 255", "resize_to": input_size(run.policy, run.image_size),
                       "normalize": norm[0] if norm else None},
        "checkpoint": {"path": str(run.checkpoint), "sha256": run.checkpoint_sha256},
        **(timm_description(run, norm[0] if norm else None) if fmt == "timm" else {}),
    }


def export_run(target: str | Path, fmt: str = "torchvision", out: str | Path | None = None,
               force: bool = False) -> Path:
    """Write the backbone of a run (or .ckpt) as `out` (default: <run>/export/backbone-<fmt>.pth) + `.json`."""
    run = load_run(target)
    state = backbone_state(build_encoder(run), fmt)
    if out is None:
        base = run.run_dir / "export" if run.run_dir else run.checkpoint.parent
        out = base / f"backbone-{fmt}.pth"
    out = Path(out)
    meta = out.with_suffix(".json")
    if meta == out:
        raise ConfigError(f"--out {out}: the weights file cannot end in .json (the description is written as "
                          f"{meta}); use e.g. {out.with_suffix('.pth')}.")
    for path in (out, meta):
        if path.is_dir() or (path.is_symlink() and not path.exists()):  # --force replaces files, never a folder
            raise ConfigError(f"--out {out}: {path} is a folder or a dangling link; give a file name such as "
                              f"{path / f'backbone-{fmt}.pth' if path.is_dir() else path.with_name('backbone.pth')}.")
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists; choose another --out or pass --force to replace it.")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is a file, not a folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    meta.write_text(json.dumps(_describe(run, fmt, out), indent=2))
    return out
