"""Ablation specs (YAML, schema-validated like configs) and the arm generators.

Arms share randomness: every arm of a seed uses the same per-op seeded streams (see
simclr.augment.pipeline), so differences between arms come from the policy, not the dice. No two arms
of a spec may be the same policy (a repeated arm would pose as a separate result).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simclr.augment import REGISTRY, load_policy, policy_from_dict
from simclr.augment.policy import Policy
from simclr.config.files import beside_spec, check_name, read_yaml
from simclr.config.run import EVAL_PROTOCOLS, LABELLED_PROTOCOLS, load_config
from simclr.config.schema import ConfigError, build, suggest, to_dict


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


@dataclass(frozen=True)
class PairwiseSpec:
    ops: tuple[str, ...] = field(default=FIG5_OPS, metadata={"help": "transformations (rows and columns): "
                                 + ", ".join(FIG5_TRANSFORMS) + ", or a registry op name"})
    extra_rows: tuple[str, ...] = field(default=("flip",), metadata={"help": "transformations that get a row "
                                        "only (A alone and A then each of `ops`), not a column"})
    ordered: bool = field(default=True, metadata={"help": "A then B and B then A are different arms (Fig. 5)"})
    only_with: tuple[str, ...] = field(default=(), metadata={"help": "keep only the cells whose row or column "
                                       "is one of these (a reduced grid: e.g. the crop and color rows and columns)"})


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
    base_config: str = field(metadata={"help": "the run config every arm starts from; a relative path is relative "
                                           "to the spec's folder"})
    arms: ArmsSpec
    overrides: tuple[str, ...] = ()
    base_policy: str | None = None
    seeds: tuple[int, ...] = field(default=(0,), metadata={"range": (0, 2**31 - 1)})
    protocols: tuple[str, ...] = ("knn", "linear")
    output_dir: str = "ablations"
    reference: str | None = field(default=None, metadata={"help": "arm that paired differences are taken "
                                  "against; default: base, else pair-crop, else the first arm"})


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
        return spec_from_dict(raw, path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def spec_from_dict(raw: dict, folder: Path) -> AblationSpec:
    """A spec given as data (`simclr search` builds its final comparison's), checked as a spec file is; a relative
    base_config lies in `folder`."""
    spec = build(AblationSpec, raw)
    spec = dataclasses.replace(spec, base_config=beside_spec(folder, spec.base_config, "base_config"))
    _validate(spec)
    return spec


# run keys the runner sets for every run (seed from `seeds`, name and output_dir from the study's folder): an
# override of them would be silently replaced, so it is refused
RUNNER_KEYS = {"seed": "the spec's `seeds`", "name": "each arm's run folder (runs/<arm>-seed<s>)",
               "output_dir": "the spec's `output_dir`"}


def _validate(spec: AblationSpec) -> None:
    check_name(spec.name, "name")
    for i, item in enumerate(spec.overrides):
        key = item.split("=", 1)[0].strip()
        if key in RUNNER_KEYS:
            raise ConfigError(f"overrides[{i}]: '{item}' would be replaced in every run by {RUNNER_KEYS[key]}; "
                              f"drop it and set that instead.")
    try:
        cfg = load_config(spec.base_config, spec.overrides)  # the base run config must be valid as is
    except ConfigError as e:  # load_config blames "command-line" overrides; these are the spec's own
        raise ConfigError(str(e).replace("command-line override ", "overrides: ", 1)) from None
    labelled = [p for p in spec.protocols if p in LABELLED_PROTOCOLS]
    if labelled and cfg.data.train_split == "unlabeled":  # refused now, not after every arm has trained
        raise ConfigError(f"protocols: {labelled} fit on labelled training images, but the base config trains on "
                          "data.train_split=unlabeled, which has none. Use train+unlabeled (the STL-10 protocol: its "
                          "5,000 labelled train images serve the evaluation), or only diagnostics and selection.")
    repeated = sorted({s for s in spec.seeds if spec.seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"seeds: {repeated} listed more than once; each seed is one run per arm, so give "
                          "distinct seeds.")
    valid = (*EVAL_PROTOCOLS, "selection")  # selection: the search objectives (simclr.ablate.selection)
    for i, p in enumerate(spec.protocols):
        if p not in valid:
            raise ConfigError(f"protocols[{i}]: unknown '{p}'.{suggest(p, valid)}")
    a = spec.arms
    if not (a.drop_one or a.pairwise or a.sweep or a.named):
        raise ConfigError("arms: no arms; set drop_one, pairwise, sweep or named.")
    if a.pairwise:
        valid = [*FIG5_TRANSFORMS, *(n for n in REGISTRY if n != "normalize")]
        for key in ("ops", "extra_rows", "only_with"):
            names = getattr(a.pairwise, key)
            for i, op in enumerate(names):
                if op not in valid:
                    raise ConfigError(f"arms.pairwise.{key}[{i}]: unknown transformation '{op}'.{suggest(op, valid)}")
                if op in names[:i]:
                    raise ConfigError(f"arms.pairwise.{key}[{i}]: '{op}' is listed twice.")
    if a.sweep:
        if a.sweep.op not in REGISTRY:
            raise ConfigError(f"arms.sweep.op: unknown op '{a.sweep.op}'.{suggest(a.sweep.op, REGISTRY)}")
        fields = [f.name for f in dataclasses.fields(REGISTRY[a.sweep.op].Params)]
        if a.sweep.param not in fields:
            raise ConfigError(f"arms.sweep.param: '{a.sweep.param}' is not a parameter of {a.sweep.op}."
                              f"{suggest(a.sweep.param, fields)}")
    arms = generate_arms(spec)  # builds every policy: out-of-range sweep values fail here, with the arm named
    if spec.reference is not None and spec.reference not in [arm.name for arm in arms]:
        names = [arm.name for arm in arms]
        raise ConfigError(f"reference: '{spec.reference}' is not an arm.{suggest(spec.reference, names)}")


def check_data(spec: AblationSpec, where: str) -> None:
    """Before any arm is launched (a spec may be validated away from the cluster that holds its data): its
    data.path must exist, or every arm would fail reading it after it was queued."""
    path = load_config(spec.base_config, spec.overrides).data.path
    if path and not Path(path).exists():
        raise ConfigError(f"{where}: data.path: {path} not found (from {spec.base_config}"
                          f"{' and overrides' if spec.overrides else ''}, relative to {Path.cwd()}); every arm "
                          "would fail reading it.")


def reference_arm(spec: AblationSpec, arms: list[Arm]) -> str:
    """The arm paired differences are taken against: `reference`, else base, else pair-crop, else the first."""
    names = [arm.name for arm in arms]
    for candidate in (spec.reference, "base", "pair-crop"):
        if candidate in names:
            return candidate
    return names[0]


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
    return arms


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
