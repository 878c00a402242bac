"""Ablation specs (YAML, schema-validated like configs) and the arm generators.

Arms share randomness: every arm of a seed uses the same per-op seeded streams (see
simclr.augment.pipeline), so differences between arms come from the policy, not the dice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simclr.augment import REGISTRY, load_policy, policy_from_dict
from simclr.augment.policy import Policy
from simclr.config.files import check_name, read_yaml
from simclr.config.run import EVAL_PROTOCOLS, load_config
from simclr.config.schema import ConfigError, build, suggest, to_dict


@dataclass(frozen=True)
class PairwiseSpec:
    ops: tuple[str, ...] = field(metadata={"help": "transformations; random_resized_crop = crop alone"})
    ordered: bool = field(default=True, metadata={"help": "A then B and B then A are different arms (Fig. 5)"})


@dataclass(frozen=True)
class SweepSpec:
    op: str
    param: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class ArmsSpec:
    drop_one: bool = field(default=False, metadata={"help": "the base, and the base without each op in turn"})
    pairwise: PairwiseSpec | None = None
    sweep: SweepSpec | None = None
    named: dict[str, str] = field(default_factory=dict, metadata={"help": "arm name -> policy file"})


@dataclass(frozen=True)
class AblationSpec:
    name: str
    base_config: str
    arms: ArmsSpec
    overrides: tuple[str, ...] = ()
    base_policy: str | None = None
    seeds: tuple[int, ...] = field(default=(0,), metadata={"range": (0, 2**31 - 1)})
    protocols: tuple[str, ...] = ("knn", "linear")
    output_dir: str = "ablations"


@dataclass(frozen=True)
class Arm:
    name: str
    policy: Policy
    kind: str                   # base | drop | pair | sweep | named
    meta: dict = field(default_factory=dict)


def load_spec(path: str | Path) -> AblationSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ablation spec not found.")
    raw = read_yaml(path, "ablation spec")
    try:
        spec = build(AblationSpec, raw)
        _validate(spec)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def _validate(spec: AblationSpec) -> None:
    check_name(spec.name, "name")
    try:
        load_config(spec.base_config, spec.overrides)  # the base run config must be valid as is
    except ConfigError as e:  # load_config blames "command-line" overrides; these are the spec's own
        raise ConfigError(str(e).replace("command-line override ", "overrides: ", 1)) from None
    repeated = sorted({s for s in spec.seeds if spec.seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"seeds: {repeated} listed more than once; each seed is one run per arm, so give "
                          "distinct seeds.")
    for i, p in enumerate(spec.protocols):
        if p not in EVAL_PROTOCOLS:
            raise ConfigError(f"protocols[{i}]: unknown '{p}'.{suggest(p, EVAL_PROTOCOLS)}")
    a = spec.arms
    if not (a.drop_one or a.pairwise or a.sweep or a.named):
        raise ConfigError("arms: no arms; set drop_one, pairwise, sweep or named.")
    if a.pairwise:
        for i, op in enumerate(a.pairwise.ops):
            if op not in REGISTRY or op == "normalize":
                raise ConfigError(f"arms.pairwise.ops[{i}]: unknown op '{op}'.{suggest(op, REGISTRY)}")
    if a.sweep:
        if a.sweep.op not in REGISTRY:
            raise ConfigError(f"arms.sweep.op: unknown op '{a.sweep.op}'.{suggest(a.sweep.op, REGISTRY)}")
        fields = [f.name for f in dataclasses.fields(REGISTRY[a.sweep.op].Params)]
        if a.sweep.param not in fields:
            raise ConfigError(f"arms.sweep.param: '{a.sweep.param}' is not a parameter of {a.sweep.op}."
                              f"{suggest(a.sweep.param, fields)}")
    generate_arms(spec)  # builds every policy: out-of-range sweep values fail here, with the arm named


def base_policy(spec: AblationSpec) -> Policy:
    return load_policy(spec.base_policy or load_config(spec.base_config, spec.overrides).policy)


def _ops_dicts(view) -> list[dict]:
    return [o.to_dict() for o in view]


def _arm(name: str, views: list[list[dict]], kind: str, **meta) -> Arm:
    try:
        pol = policy_from_dict({"name": name, "views": [{"ops": v} for v in views]}, f"arm '{name}'")
    except ConfigError as e:
        raise ConfigError(f"arms: {e}") from None
    return Arm(name, pol, kind, meta)


def generate_arms(spec: AblationSpec) -> list[Arm]:
    base = base_policy(spec)
    views = [_ops_dicts(v) for v in base.views]
    arms: list[Arm] = []
    a = spec.arms
    if a.drop_one or (a.sweep and not _base_value_swept(base, a.sweep)):
        arms.append(_arm("base", views, "base"))
    if a.drop_one:
        for op in base.op_names():
            if op == "normalize":
                continue
            arms.append(_arm(f"drop-{op}", [[d for d in v if op not in d] for v in views], "drop", op=op))
    if a.pairwise:
        arms += pairwise_arms(base, a.pairwise)
    if a.sweep:
        s = a.sweep
        for value in s.values:
            changed = [[{k: {**p, s.param: value}} if k == s.op else {k: p} for d in v for k, p in d.items()]
                       for v in views]
            if not any(s.op in d for v in changed for d in v):
                raise ConfigError(f"arms.sweep.op: '{s.op}' is not in the base policy '{base.name}'.")
            arms.append(_arm(f"{s.op}.{s.param}={value:g}", changed, "sweep", value=value))
    for name, path in a.named.items():
        arms.append(Arm(name, load_policy(path), "named"))
    names = [arm.name for arm in arms]
    for arm in arms:  # an arm name becomes policies/<name>.yaml and runs/<name>-seedN
        check_name(arm.name, f"arms.named.{arm.name}" if arm.kind == "named" else f"arms ({arm.kind} arm)")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"arms: duplicate arm names {sorted(dupes)}.")
    return arms


def _base_value_swept(base: Policy, sweep: SweepSpec) -> bool:
    """True if the base policy's own value of the swept parameter is one of the sweep's values
    (then a separate `base` arm would only repeat that sweep arm)."""
    values = {getattr(o.params, sweep.param) for v in base.views for o in v if o.name == sweep.op}
    return len(values) == 1 and values.pop() in sweep.values


def pairwise_arms(base: Policy, spec: PairwiseSpec) -> list[Arm]:
    """SimCLR Fig. 5: every image is randomly cropped and resized on both branches; then
    transformation A (diagonal) or A followed by B (off-diagonal) is applied to branch 1 only,
    branch 2 left as the crop alone. Each transformation always applies (p=1), with the base
    policy's parameters where the base has that op, else the registry defaults."""
    base_ops = {o.name: to_dict(o.params) for o in base.views[0]}
    crop = {"random_resized_crop": base_ops.get("random_resized_crop", {})}
    tail = [{"normalize": base_ops["normalize"]}] if "normalize" in base_ops else []

    def op(name: str) -> list[dict[str, Any]]:
        if name == "random_resized_crop":  # crop is already underneath: "crop" alone adds nothing
            return []
        return [{name: {**base_ops.get(name, {}), "p": 1.0}}]

    arms = []
    for i, first in enumerate(spec.ops):
        for j, second in enumerate(spec.ops):
            if not spec.ordered and j < i:
                continue
            extra = op(first) if i == j else op(first) + op(second)
            name = f"pair-{first}" if i == j else f"pair-{first}+{second}"
            arms.append(_arm(name, [[crop, *extra, *tail], [crop, *tail]], "pair", first=first, second=second))
    return arms
