"""simclr's LightningModule and DataModule for a Trainer of either Lightning package.

simclr is built on `pytorch_lightning`. The unified `lightning` package ships its own copy of the same classes
(`lightning.pytorch.LightningModule` is another class than `pytorch_lightning.LightningModule`), so its Trainer
refuses simclr's objects with a TypeError. `build(cfg, package="lightning")` returns them rebuilt on
`lightning.pytorch`: simclr's own methods over the unified package's base class, so that package's Trainer sees
a LightningModule of its own, and its checks of which hooks a model overrides see simclr's hooks only.
"""
from __future__ import annotations

import importlib
import importlib.util
from functools import cache

import pytorch_lightning as pl
import yaml

from simclr.augment import load_policy
from simclr.config.run import RunConfig
from simclr.config.schema import ConfigError, to_dict
from simclr.data import SimCLRDataModule
from simclr.module.simclr_module import SimCLRModule

PACKAGES = ("pytorch_lightning", "lightning")
_LIGHTNING_OWN = ("pytorch_lightning", "lightning_fabric")  # modules whose classes the rebuilt ones take from lightning


def _on(cls: type, pl_base: type, base: type) -> type:
    """`cls` (a subclass of `pl_base`) as a subclass of `base`, the unified package's copy of `pl_base`: every
    attribute `cls` inherits from pytorch_lightning is taken from `base` instead (the MRO alone would put
    pytorch_lightning's copies first, and Lightning would take them for overrides)."""
    new = type(cls.__name__, (cls, base), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    for klass in pl_base.__mro__:
        if not klass.__module__.startswith(_LIGHTNING_OWN):
            continue
        for name in vars(klass):
            if name.startswith("__") and name != "__init__":
                continue
            owner = next(k for k in cls.__mro__ if name in vars(k))
            source = next((k for k in base.__mro__ if name in vars(k)), None)
            if owner.__module__.startswith(_LIGHTNING_OWN) and source is not None:
                setattr(new, name, vars(source)[name])  # raw: staticmethods and properties stay what they are
    return new


@cache
def classes(package: str = "pytorch_lightning") -> tuple[type, type]:
    """(LightningModule class, LightningDataModule class) of simclr for `package`'s Trainer."""
    if package not in PACKAGES:
        raise ConfigError(f"package: '{package}' is not a Lightning package; valid: {', '.join(PACKAGES)}.")
    if package == "pytorch_lightning":
        return SimCLRModule, SimCLRDataModule
    if importlib.util.find_spec("lightning") is None:
        raise ConfigError("package: 'lightning' is not installed; pip install lightning (or use "
                          "pytorch_lightning.Trainer, which simclr is built on).")
    lp = importlib.import_module("lightning.pytorch")
    return (_on(SimCLRModule, pl.LightningModule, lp.LightningModule),
            _on(SimCLRDataModule, pl.LightningDataModule, lp.LightningDataModule))


def build(cfg: RunConfig, package: str = "pytorch_lightning"):
    """(module, datamodule) for `cfg`, as `train.run` builds them, for a Trainer of `package` that you set up
    yourself. `trainer.channels_last: auto` is `train.run`'s to resolve: here it means off unless set to true."""
    module_cls, data_cls = classes(package)
    data = data_cls(cfg.data, seed=cfg.seed)
    data.setup()
    policy = yaml.safe_load(load_policy(cfg.policy).to_yaml())
    module = module_cls(to_dict(cfg), data.channels, data.num_classes, policy,
                        image_size=int(data.splits["train"].images.shape[-1]))
    return module, data
