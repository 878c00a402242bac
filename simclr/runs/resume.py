"""Resumability: whether a run directory can be continued, and with which config and checkpoint.

A resume continues a run as it was started: config.yaml edited since, or a checkpoint that is not simclr's,
is refused with one line saying why.
"""
from __future__ import annotations

from pathlib import Path

from simclr.config.files import read_yaml
from simclr.config.run import STREAM_ONLY, RunConfig, config_from_dict, data_section, load_config
from simclr.config.schema import ConfigError, to_dict
from simclr.runs.checkpoints import read_checkpoint
from simclr.runs.layout import CHECKPOINTS, CONFIG, LAST, config_path, last_checkpoint


def flatten(tree, prefix: str = "") -> dict:
    """A nested dict as {"dotted.key": value} (tuples as lists), for comparing two configs key by key."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): list(tree) if isinstance(tree, tuple) else tree}


def resumable(run_dir: Path) -> tuple[RunConfig, Path, dict]:
    """(config, last checkpoint, the config as the checkpoint records it) of a run that can be continued, or one
    ConfigError saying why not. The resumed run records that same dict in its checkpoints, so keys that today's
    schema drops (see config.run.as_stored) stay as written in config.yaml and a later resume still matches."""
    config_file, ckpt = config_path(run_dir), last_checkpoint(run_dir)
    if not config_file.is_file():
        raise ConfigError(f"--resume {run_dir}: no {CONFIG} there; is it a run directory?")
    if not ckpt.is_file():
        raise ConfigError(f"--resume {run_dir}: no {CHECKPOINTS}/{LAST} (the run stopped before its first epoch "
                          "ended); start it afresh.")
    cfg = load_config(config_file, stored=True)
    blob = read_checkpoint(ckpt, action="be resumed from")
    try:
        saved = blob["hyper_parameters"]["config"]
    except (KeyError, TypeError):
        raise ConfigError(f"{ckpt}: cannot be resumed from; it is not a simclr checkpoint (no "
                          "hyper_parameters.config).") from None
    try:  # both read by today's schema, so keys it adds or drops at their defaults are no edit
        then = flatten(to_dict(config_from_dict(saved)))
    except (ConfigError, TypeError):
        then = flatten(saved if isinstance(saved, dict) else {})
    now = flatten(to_dict(cfg))
    changed = [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(now) | set(then))
               if now.get(k) != then.get(k)]
    # the stream-only keys the stored reading drops for the in-memory loader: compared as written
    written, recorded = data_section(read_yaml(config_file, "config file")), data_section(saved)
    changed += [f"data.{k}: {recorded.get(k)!r} -> {written.get(k)!r}" for k in STREAM_ONLY
                if written.get(k) != recorded.get(k)]
    if changed:
        raise ConfigError(f"{config_file}: edited after the run started ({'; '.join(changed[:4])}); a resume "
                          "continues the run as it was started. Restore the file, or start a new run.")
    return cfg, ckpt, saved
