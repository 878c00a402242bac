"""Ablation specs: YAML, schema-validated like configs; everything a spec needs is checked at load, before any
arm runs. The arms themselves are generated in `arms.py`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from simclr.ablate.arms import FIG5_OPS, FIG5_TRANSFORMS, generate_arms
from simclr.augment import REGISTRY
from simclr.config.files import beside_spec, check_name, read_yaml
from simclr.config.run import EVAL_PROTOCOLS, LABELLED_PROTOCOLS, load_config
from simclr.config.schema import ConfigError, build, suggest


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
    methods: tuple[str, ...] = field(default=(), metadata={"help": "a method axis: every arm runs with each of "
                                     "these methods (arm@method), compared within each method and for the "
                                     "interaction; empty: the base config's method only"})
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata={
        "help": "method -> overrides of that method's arms only (its own method.<name>.* keys, or e.g. its "
                "optim.lr), after the spec's overrides"})


def method_overrides(spec: AblationSpec, method: str | None) -> tuple[str, ...]:
    """The overrides of one method's arms: the spec's, then method.name and that method's method_overrides."""
    if method is None:
        return tuple(spec.overrides)
    return (*spec.overrides, f"method.name={method}", *spec.method_overrides.get(method, ()))


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
    if isinstance(raw, dict) and "methods" in raw and not spec.methods:  # `methods: []` is not "no method axis"
        from simclr.config.methods import METHODS
        raise ConfigError(f"methods: an empty list; give one or more of {', '.join(METHODS)}, or drop the key "
                          "(every arm then runs the base config's method).")
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
        generated = spec.arms.drop_one or spec.arms.pairwise is not None or spec.arms.sweep is not None
        if key == "policy" and (spec.base_policy is not None or not generated):  # it would reach no run
            raise ConfigError(f"overrides[{i}]: '{item}' would be ignored: " + (
                "`base_policy:` is what generated arms start from" if spec.base_policy is not None else
                "each named arm runs its own policy file") + "; drop it (set `base_policy:` for generated arms).")
    method_configs = _validate_methods(spec)
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
    _check_backbones_fit(arms, method_configs or {None: cfg})
    names = list(dict.fromkeys(arm.meta.get("policy_arm", arm.name) for arm in arms))
    if spec.reference is not None and spec.reference not in names:
        raise ConfigError(f"reference: '{spec.reference}' is not an arm.{suggest(spec.reference, names)}")


def _validate_methods(spec: AblationSpec) -> dict:
    """The method axis checked; returns each method's run config (base config, overrides, method overrides)."""
    from simclr.config.methods import METHODS
    for i, m in enumerate(spec.methods):
        if m not in METHODS:
            raise ConfigError(f"methods[{i}]: unknown method '{m}'.{suggest(m, METHODS)}")
        if m in spec.methods[:i]:
            raise ConfigError(f"methods[{i}]: '{m}' is listed twice.")
    for m, items in spec.method_overrides.items():
        if m not in spec.methods:
            raise ConfigError(f"method_overrides.{m}: '{m}' is not in methods {list(spec.methods)}; these overrides "
                              "would be ignored.")
        for i, item in enumerate(items):
            key = item.split("=", 1)[0].strip()
            if key in RUNNER_KEYS or key in ("method.name", "policy"):
                by = {"method.name": "the methods axis", "policy": "each arm's policy"}
                raise ConfigError(f"method_overrides.{m}[{i}]: '{item}' would be replaced in every run by "
                                  f"{RUNNER_KEYS.get(key) or by[key]}.")
    if not spec.methods:
        return {}
    for i, item in enumerate(spec.overrides):  # every arm's method is the axis's: a method key here would be replaced
        if item.split("=", 1)[0].strip().startswith("method."):
            raise ConfigError(f"overrides[{i}]: '{item}' would be replaced by the spec's `methods` axis; set a "
                              "method's own parameters under method_overrides.<method>.")
    configs = {}
    for m in spec.methods:
        try:
            configs[m] = load_config(spec.base_config, method_overrides(spec, m))
        except ConfigError as e:
            raise ConfigError(f"method_overrides.{m}: " + str(e).split("override ", 1)[-1]) from None
    return configs


def _check_backbones_fit(arms, configs: dict) -> None:
    """A timm backbone that cannot take an arm's images (a ViT patch larger than its crop) is refused now, naming
    the arm, not after other arms have trained: each arm's model (its method's overrides included) is built on the
    meta device at the size the arm's policy crops to (else data.image_size; arms of neither are left to train.run).
    `configs`: each method's run config (None: the spec without a method axis)."""
    from simclr.augment.policy import input_size
    from simclr.models import check_fits
    seen: set = set()
    for arm in arms:
        cfg = configs[arm.meta.get("method")]
        size = input_size(arm.policy, cfg.data.image_size)
        channels = 1 if cfg.data.name in ("digits", "fashion_mnist") else 3  # the readers give grayscale or RGB
        key = (cfg.model, channels, size)
        if size is None or key in seen:
            continue
        seen.add(key)
        try:
            check_fits(cfg.model, channels, size)
        except ConfigError as e:
            raise ConfigError(f"arm {arm.name}: {e}") from None


def check_data(spec: AblationSpec, where: str) -> None:
    """Before any arm is launched (a spec may be validated away from the cluster that holds its data): its
    data.path must exist, or every arm would fail reading it after it was queued."""
    path = load_config(spec.base_config, spec.overrides).data.path
    if path and not Path(path).exists():
        raise ConfigError(f"{where}: data.path: {path} not found (from {spec.base_config}"
                          f"{' and overrides' if spec.overrides else ''}, relative to {Path.cwd()}); every arm "
                          "would fail reading it.")


