"""The arms of an ablation: the generators (drop-one, Fig. 5 pairwise, sweep, named policies) and, with a method
axis, every policy arm once per method (`<arm>@<method>`).

Arms share randomness: every arm of a seed uses the same per-op seeded streams (see simclr.augment.pipeline), so
differences between arms come from the policy (and the method), not the dice. No two policy arms may be the same
policy (a repeated arm would pose as a separate result).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simclr.augment import load_policy, policy_from_dict
from simclr.augment.policy import Policy
from simclr.config.files import check_name
from simclr.config.run import load_config
from simclr.config.schema import ConfigError, to_dict

if TYPE_CHECKING:  # spec.py validates a spec by generating its arms: the schema's types only, at import
    from simclr.ablate.spec import AblationSpec, PairwiseSpec, SweepSpec


@dataclass(frozen=True)
class Arm:
    name: str
    policy: Policy
    kind: str                   # base | drop | pair | sweep | named
    meta: dict = field(default_factory=dict)



# SimCLR Fig. 4's transformations, as the registry expresses them (Fig. 5 protocol: pairwise_arms).
# Each is a list of ops with p=1 unless noted; `None` params = the base policy's, else registry defaults.
FIG5_TRANSFORMS: dict[str, list[tuple[str, dict]]] = {
    "crop": [("random_resized_crop", {"p": 1.0})],        # a further random crop of the shared crop
    "cutout": [("random_erasing", {"p": 1.0})],
    "color": [("color_jitter", {}), ("grayscale", {})],    # colour distortion = jitter + drop, the base's p
    "sobel": [("sobel", {"p": 1.0})],
    "noise": [("gaussian_noise", {"p": 1.0})],
    "blur": [("gaussian_blur", {"p": 1.0})],
    "rotate": [("rotation", {"angles": (90.0, 180.0, 270.0), "p": 1.0})],
    "flip": [("horizontal_flip", {"p": 1.0})],           # not in Fig. 5 (the paper folds flip into crop)
}
FIG5_OPS = ("crop", "cutout", "color", "sobel", "noise", "blur", "rotate")



def reference_arm(spec: AblationSpec, arms: list[Arm]) -> str:
    """The arm paired differences are taken against: `reference`, else base, else pair-crop, else the first."""
    names = [arm.meta.get("policy_arm", arm.name) for arm in arms]
    for candidate in (spec.reference, "base", "pair-crop"):
        if candidate in names:
            return arms[names.index(candidate)].name  # with a method axis: that policy arm of the first method
    return arms[0].name


def base_policy(spec: AblationSpec) -> Policy:
    return load_policy(spec.base_policy or load_config(spec.base_config, spec.overrides).policy)


def _ops_dicts(view) -> list[dict]:
    return [o.to_dict() for o in view]


def _arm(name: str, views: list[list[dict]], kind: str, **meta) -> Arm:
    """views: [view 0 ops, view 1 ops, shared ops] as op dicts."""
    raw = {"name": name, "views": [{"ops": v} for v in views[:2]]}
    if views[2]:
        raw["shared"] = views[2]
    try:
        pol = policy_from_dict(raw, f"arm '{name}'")
    except ConfigError as e:
        raise ConfigError(f"arms: {e}") from None
    return Arm(name, pol, kind, meta)


def generate_arms(spec: AblationSpec) -> list[Arm]:
    base = base_policy(spec)
    views = [_ops_dicts(v) for v in (*base.views, base.shared)]
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
            arm = _arm(f"{s.op}.{s.param}={value:g}", changed, "sweep", value=value, param=f"{s.op}.{s.param}")
            if arms and arms[0].kind == "base" and arm.policy.views == arms[0].policy.views:
                arms[0].meta.update(value=value, param=f"{s.op}.{s.param}")  # the base is this sweep point
                continue
            arms.append(arm)
    for name, path in a.named.items():
        arms.append(Arm(name, load_policy(path), "named"))
    _check_arms(arms)
    if not spec.methods:
        return arms
    # the method axis: every policy arm once per method, method-major within an arm so partial results stay paired
    return [Arm(f"{arm.name}@{m}", arm.policy, arm.kind, {**arm.meta, "method": m, "policy_arm": arm.name})
            for arm in arms for m in spec.methods]


def _check_arms(arms: list[Arm]) -> None:
    names = [arm.name for arm in arms]
    for arm in arms:  # an arm name becomes policies/<name>.yaml and runs/<name>-seedN
        check_name(arm.name, f"arms.named.{arm.name}" if arm.kind == "named" else f"arms ({arm.kind} arm)")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"arms: duplicate arm names {sorted(dupes)}.")
    seen: dict = {}
    for arm in arms:
        key = (arm.policy.shared, arm.policy.views)
        if key in seen:
            raise ConfigError(f"arms: '{arm.name}' is the same policy as '{seen[key]}'; an arm repeated under "
                              "another name would pose as a separate result. Remove one of them.")
        seen[key] = arm.name


def _base_value_swept(base: Policy, sweep: SweepSpec) -> bool:
    """True if the base policy's own value of the swept parameter is one of the sweep's values
    (then a separate `base` arm would only repeat that sweep arm)."""
    values = {getattr(o.params, sweep.param) for v in (*base.views, base.shared) for o in v if o.name == sweep.op}
    return len(values) == 1 and values.pop() in sweep.values


def pairwise_arms(base: Policy, spec: PairwiseSpec) -> list[Arm]:
    """SimCLR Fig. 5 (§3.1): every image is randomly cropped and resized once (the base policy's crop,
    a `shared` op, so both branches start from the same crop); then transformation A (diagonal) or A
    followed by B (off-diagonal) is applied to branch 1 only, and branch 2 is the identity of that
    crop. "crop" under test is a further random crop on branch 1. Transformations are
    FIG5_TRANSFORMS, with the base policy's parameters where the base has the op, else the registry
    defaults (p=1 except colour distortion, which keeps the base's jitter/drop probabilities)."""
    base_ops = {o.name: to_dict(o.params) for v in (base.shared, base.views[0]) for o in v}
    if "random_resized_crop" not in base_ops:
        raise ConfigError(f"arms.pairwise: the base policy '{base.name}' has no random_resized_crop to share "
                          "between the branches (Fig. 5 crops every image first).")
    crop = {"random_resized_crop": base_ops["random_resized_crop"]}
    if "normalize" not in base_ops:
        raise ConfigError(f"arms.pairwise: the base policy '{base.name}' has no normalize; Fig. 5's identity "
                          "branch is the shared crop followed by the base's normalize.")
    tail = [{"normalize": base_ops["normalize"]}]

    def ops(name: str) -> list[dict[str, Any]]:
        steps = FIG5_TRANSFORMS.get(name, [(name, {"p": 1.0})])
        return [{op: {**base_ops.get(op, {}), **params}} for op, params in steps]

    arms = []
    rows = [(first, spec.ops.index(first) if first in spec.ops else None)
            for first in dict.fromkeys([*spec.ops, *spec.extra_rows])]
    for first, i in rows:
        for j, second in enumerate([first] + [s for s in spec.ops if s != first]):
            if i is not None and not spec.ordered and spec.ops.index(second) < i:
                continue
            if spec.only_with and first not in spec.only_with and second not in spec.only_with:
                continue
            extra = ops(first) if first == second else ops(first) + ops(second)
            name = f"pair-{first}" if first == second else f"pair-{first}+{second}"
            try:
                pol = policy_from_dict({"name": name, "shared": [crop], "views": [{"ops": [*extra, *tail]},
                                       {"ops": tail}]}, f"arm '{name}'")
            except ConfigError as e:
                raise ConfigError(f"arms.pairwise: {e}") from None
            arms.append(Arm(name, pol, "pair", {"first": first, "second": second}))
    return arms
