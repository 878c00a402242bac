"""Policy-search specs (YAML, validated like ablation specs) and the policy a set of trial values means.

A search space is a base policy plus, per op, what may change:

    space:
      rotation:                       # not in the base: added (before normalize) when on
        toggle: true                  # search `rotation.on` in {true, false}
        fixed: {p: 1.0}               # set for every trial
        params:
          degrees: {low: 0, high: 180, bound: symmetric}    # degrees = [-v, v]
      random_resized_crop:
        params:
          scale: {low: 0.08, high: 0.9, bound: lower}       # scale = [v, base max]
      color_jitter:
        params:
          s: {low: 0.0, high: 1.0}
          p: {choices: [0.5, 0.8, 1.0]}

Every parameter is suggested in every trial (not only when its op is on), so fANOVA importances see
all trials. Trial values are named `op.param` and `op.on`.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal


from simclr.augment import REGISTRY, load_policy, policy_from_dict
from simclr.augment.policy import Policy
from simclr.config.files import beside_spec, read_yaml
from simclr.config.run import RunConfig, load_config
from simclr.config.schema import ConfigError, FieldError, build, suggest, to_dict
from simclr.evaluate.proxies import LABEL_FREE

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROTOCOLS = ("knn", "linear", "diagnostics")


@dataclass(frozen=True)
class Dimension:
    low: float | None = None
    high: float | None = None
    log: bool = field(default=False, metadata={"help": "sample on a log scale (low > 0)"})
    step: float | None = field(default=None, metadata={"range": (0.0, None), "help": "grid step"})
    choices: tuple[float, ...] | None = field(default=None, metadata={"help": "instead of low/high"})
    bound: Literal["lower", "upper", "symmetric"] | None = field(default=None, metadata={
        "help": "for [min, max] parameters: search min (lower), max (upper) or both as [-v, v] (symmetric)"})

    def __post_init__(self):
        ranged = self.low is not None or self.high is not None
        if ranged == (self.choices is not None):
            raise FieldError("low", "give either low and high, or choices.")
        if ranged and (self.low is None or self.high is None):
            raise FieldError("high" if self.high is None else "low", "low and high go together.")
        if ranged and self.low >= self.high:
            raise FieldError("high", f"must be > low ({self.low}), got {self.high}.")
        if self.step is not None and (self.step <= 0 or not ranged):
            raise FieldError("step", f"must be > 0 and go with low/high (a grid from low to high), got {self.step}.")
        if self.log and (not ranged or self.low <= 0 or self.step is not None):
            raise FieldError("log", "needs low > 0 and no step.")
        if self.choices is not None and not self.choices:
            raise FieldError("choices", "is empty.")


@dataclass(frozen=True)
class OpSpace:
    toggle: bool = field(default=False, metadata={"help": "also search whether the op is applied at all"})
    params: dict[str, Dimension] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict, metadata={"help": "parameters set in every trial"})


@dataclass(frozen=True)
class PrunerSpec:
    kind: Literal["auto", "median", "none"] = field(default="auto", metadata={
        "help": "auto: median pruning on the kNN monitor when the objective uses labels, else none"})
    startup_trials: int = field(default=3, metadata={"range": (0, None), "help": "trials never pruned"})
    warmup_epochs: int = field(default=1, metadata={"range": (0, None), "help": "epochs before pruning may start"})


@dataclass(frozen=True)
class FinalSpec:
    enabled: bool = True
    seeds: tuple[int, ...] = field(default=(1, 2, 3), metadata={"range": (0, 2**31 - 1),
                                   "help": "training seeds of both arms; not the search seed"})
    protocols: tuple[str, ...] = ("knn", "linear")


@dataclass(frozen=True)
class SearchSpec:
    name: str
    base_config: str = field(metadata={"help": "the run config every trial starts from; a relative path is relative "
                                           "to the spec's folder"})
    space: dict[str, OpSpace]
    base_policy: str | None = None
    overrides: tuple[str, ...] = ()
    objective: Literal["knn_val_top1", "rankme", "rotation_acc"] = "knn_val_top1"
    trials: int = field(default=20, metadata={"range": (1, None), "help": "the study's total, over all workers"})
    seed: int = field(default=0, metadata={"range": (0, 2**31 - 1), "help": "sampler seed and every trial's seed"})
    startup_trials: int = field(default=5, metadata={"range": (1, None), "help": "random trials before TPE"})
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    storage: str | None = field(default=None, metadata={"help": "SQLAlchemy URL; default sqlite in the study dir"})
    heartbeat_seconds: int = field(default=60, metadata={"range": (1, None),
                                   "help": "a trial silent for 2x this long is failed and retried"})
    output_dir: str = "searches"
    final: FinalSpec = field(default_factory=FinalSpec)

    @cached_property
    def base_run(self) -> RunConfig:
        """The base config with the spec's overrides, read once per spec: every trial, the cost estimate and the
        checks start from this one reading."""
        return load_config(self.base_config, self.overrides)

    @cached_property
    def start_policy(self) -> Policy:
        """The policy trials change and the final comparison's base arm (read once per spec, like base_run)."""
        return load_policy(self.base_policy or self.base_run.policy)

    @property
    def uses_labels(self) -> bool:
        return self.objective not in LABEL_FREE

    @property
    def prunes(self) -> bool:
        return self.pruner.kind == "median" or (self.pruner.kind == "auto" and self.uses_labels)


def load_search_spec(path: str | Path, relative_to: Path | None = None) -> SearchSpec:
    """`relative_to`: the folder a relative base_config lies in, where that is not the spec's own (a copy of the
    spec kept with a study's outputs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search spec not found.")
    raw = read_yaml(path, "search spec")  # a key given twice (under space:, say) is refused, not the last one kept
    try:
        spec = build(SearchSpec, raw)
        folder = path.parent if relative_to is None else Path(relative_to)
        spec = dataclasses.replace(spec, base_config=beside_spec(folder, spec.base_config, "base_config"))
        _validate(spec)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def _validate(spec: SearchSpec) -> None:
    if not NAME.match(spec.name):
        raise ConfigError(f"name: '{spec.name}' becomes a directory and a study name; use ASCII letters (A-Z, a-z), "
                          "digits and . _ -.")
    cfg = spec.base_run
    for i, p in enumerate(spec.final.protocols):
        if p not in PROTOCOLS:
            raise ConfigError(f"final.protocols[{i}]: unknown '{p}'.{suggest(p, PROTOCOLS)}")
    if spec.final.enabled and len(set(spec.final.seeds)) < 2:
        raise ConfigError("final.seeds: a paired comparison needs at least 2 distinct seeds (3 or more recommended).")
    if spec.final.enabled and spec.seed in spec.final.seeds:
        raise ConfigError(f"final.seeds: contains the search seed {spec.seed}; the best trial was chosen on that "
                          "seed's draws, which would favour it. Use other seeds.")
    if spec.uses_labels and cfg.data.train_split == "unlabeled":
        raise ConfigError(f"objective: {spec.objective} needs labelled training images, but the base config trains "
                          "on data.train_split=unlabeled, which has none. Use train+unlabeled (the STL-10 protocol), "
                          f"or a label-free objective ({', '.join(LABEL_FREE)}).")
    if spec.uses_labels and not cfg.data.val_per_class:
        raise ConfigError(f"objective: {spec.objective} needs a validation split carved from train; "
                          f"data.val_per_class is 0. Raise it, or use a label-free objective ({', '.join(LABEL_FREE)}).")
    if spec.pruner.kind == "median" and not spec.uses_labels:
        raise ConfigError(f"pruner.kind: median prunes on the kNN monitor, which uses labels; objective "
                          f"{spec.objective} is label-free. Use none (or auto).")
    if spec.prunes and not cfg.trainer.knn_monitor_every:
        raise ConfigError("pruner.kind: pruning reads the kNN monitor, but trainer.knn_monitor_every is 0; "
                          "set it (e.g. overrides: [trainer.knn_monitor_every=1]) or pruner: {kind: none}.")
    if spec.storage is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        try:
            make_url(spec.storage)
        except ArgumentError:
            raise ConfigError(f"storage: '{spec.storage}' is not an SQLAlchemy URL "
                              "(e.g. sqlite:///study.db, postgresql://user@host/db).") from None
    if not spec.space:
        raise ConfigError("space: empty; give at least one op with params or toggle.")
    base = base_policy(spec)
    for op, space in spec.space.items():
        _validate_op(op, space, f"space.{op}")
    low = corner_values(spec, "low")
    for op, space in spec.space.items():  # each end of each range, alone: errors name the spec key
        for key, dim in space.params.items():
            for end in ("low", "high"):
                values = {**low, f"{op}.{key}": corner_values(spec, end)[f"{op}.{key}"]}
                try:
                    build_policy(spec, base, values, f"{spec.name}-check")
                except ConfigError as e:
                    reason = str(e).rsplit(": ", 2)
                    raise ConfigError(f"space.{op}.params.{key}.{end}: {values[f'{op}.{key}']} makes an invalid "
                                      f"{op}: {': '.join(reason[-2:])}") from None
    for end in ("low", "high"):  # and both corners together (cross-parameter checks, e.g. hue * s)
        try:
            build_policy(spec, base, corner_values(spec, end), f"{spec.name}-{end}")
        except ConfigError as e:
            raise ConfigError(f"space: at the {end} end of every range: {e}") from None


def _validate_op(op: str, space: OpSpace, path: str) -> None:
    if op not in REGISTRY or op == "normalize":
        raise ConfigError(f"{path}: unknown op '{op}'.{suggest(op, set(REGISTRY) - {'normalize'})}")
    if not space.params and not space.toggle:
        raise ConfigError(f"{path}: nothing to search; give params or toggle: true.")
    hints = typing.get_type_hints(REGISTRY[op].Params)
    fields = [f.name for f in dataclasses.fields(REGISTRY[op].Params)]
    for key, where in [*((k, "params") for k in space.params), *((k, "fixed") for k in space.fixed)]:
        if key not in fields:
            raise ConfigError(f"{path}.{where}.{key}: not a parameter of {op}.{suggest(key, fields)}")
    for key in set(space.params) & set(space.fixed):
        raise ConfigError(f"{path}.fixed.{key}: also in params; a parameter is either searched or fixed.")
    for key, dim in space.params.items():
        tp, where = hints[key], f"{path}.params.{key}"
        pair = typing.get_origin(tp) is tuple
        if pair and dim.bound is None:
            raise ConfigError(f"{where}: {op}.{key} is a [min, max] pair; say which end to search with "
                              "bound: lower, upper or symmetric.")
        if not pair and dim.bound is not None:
            raise ConfigError(f"{where}.bound: {op}.{key} is a single number; drop bound.")
        if tp is not float and not pair:
            raise ConfigError(f"{where}: only number parameters can be searched; {op}.{key} is {tp}.")


def base_policy(spec: SearchSpec) -> Policy:
    return spec.start_policy


def corner_values(spec: SearchSpec, end: str) -> dict[str, Any]:
    """Every toggle on, every parameter at its `end` ('low' or 'high'), for validation."""
    values: dict[str, Any] = {}
    for op, space in spec.space.items():
        if space.toggle:
            values[f"{op}.on"] = True
        for key, dim in space.params.items():
            values[f"{op}.{key}"] = getattr(dim, end) if dim.choices is None else \
                (min(dim.choices) if end == "low" else max(dim.choices))
    return values


def _param_value(dim: Dimension, value: float, current: Any) -> Any:
    if dim.bound == "lower":
        return [value, current[1]]
    if dim.bound == "upper":
        return [current[0], value]
    if dim.bound == "symmetric":
        return [-value, value]
    return value


def build_policy(spec: SearchSpec, base: Policy, values: dict[str, Any], name: str) -> Policy:
    """The policy a trial's `values` (`op.param`, `op.on`) describe: the base policy with each searched op
    changed where it is, removed (`op.on` false) or, if no view of the base has it, added to every view
    before a trailing normalize."""
    views = [[o.to_dict() for o in view] for view in base.views]
    for op, space in spec.space.items():
        on = values.get(f"{op}.on", True)
        present = [next(iter(d.values())) for v in views for d in v if op in d]
        current = present[0] if present else to_dict(build(REGISTRY[op].Params, {}))
        changes = {**space.fixed, **{k: _param_value(dim, values[f"{op}.{k}"], current.get(k))
                                     for k, dim in space.params.items()}}
        for view in views:
            if not on:
                view[:] = [d for d in view if op not in d]
            elif any(op in d for d in view):
                view[:] = [{op: {**d[op], **changes}} if op in d else d for d in view]
            elif not present:  # an asymmetric base keeps the op on the views that have it, and only there
                cut = len(view) - 1 if view and "normalize" in view[-1] else len(view)
                view.insert(cut, {op: {**current, **changes}})
    description = "search trial: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    return policy_from_dict({"name": name, "description": description, "views": [{"ops": v} for v in views]},
                            f"policy '{name}'")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
