"""What this machine can run: the accelerator, the options it cannot honour (refused before a run directory
exists) and the precision `auto` resolves to (bf16 where the CPU or GPU computes it natively)."""
from __future__ import annotations

from dataclasses import replace

import torch

from simclr.config.run import RunConfig
from simclr.config.schema import ConfigError
from simclr.utils import cpu_has_bf16


def accelerator(cfg: RunConfig) -> str:
    """The accelerator a run trains on: `auto` is a GPU where one is visible."""
    if cfg.trainer.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return cfg.trainer.accelerator


def check_device_options(cfg: RunConfig) -> None:
    """Options the hardware cannot honour are errors before a run directory exists, not deep tracebacks."""
    t, acc = cfg.trainer, accelerator(cfg)
    if acc == "cpu" and t.precision == "16-mixed":
        raise ConfigError("trainer.precision: 16-mixed (fp16 autocast) needs a GPU; on CPU use bf16-mixed or 32.")
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator: '{t.accelerator}' but no CUDA device is visible; use cpu or auto.")
    if cfg.data.decode_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("data.decode_device: 'cuda' but no CUDA device is visible; use data.decode_device=cpu "
                          "(decoding in the DataLoader workers).")
    if cfg.data.decode_device == "cuda" and acc not in ("gpu", "cuda"):
        raise ConfigError(f"data.decode_device: 'cuda' decodes on the model's GPU, but trainer.accelerator is "
                          f"'{t.accelerator}'; use data.decode_device=cpu or trainer.accelerator=gpu.")
    if acc in ("gpu", "cuda") and t.devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices: {t.devices} requested, {torch.cuda.device_count()} CUDA devices visible.")


def resolve_precision(cfg: RunConfig) -> tuple[RunConfig, dict]:
    """`auto` precision and channels_last -> the values this machine runs fast (a new frozen config; explicit
    values are kept), and the record run.json keeps of what was asked and what is used."""
    t, acc = cfg.trainer, accelerator(cfg)
    gpu = acc in ("gpu", "cuda")
    cpu_bf16 = cpu_has_bf16()
    if t.precision != "auto":
        precision = t.precision
    elif gpu:
        # native bf16 only (Ampere and later): emulated bf16 on older GPUs is slower than fp32
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "32"
    else:
        precision = "bf16-mixed" if acc == "cpu" and cpu_bf16 else "32"
    channels_last = t.channels_last if t.channels_last != "auto" else gpu or precision == "bf16-mixed"
    used = replace(cfg, trainer=replace(t, precision=precision, channels_last=channels_last))
    return used, {"requested": t.precision, "used": precision, "channels_last": channels_last,
                  "channels_last_requested": t.channels_last, "cpu_bf16": cpu_bf16}
