"""Declarative augmentation policies: YAML -> validated, frozen `Policy`.

A policy file has either one `ops` list (used for both views) or `views: [{ops: [...]}, {ops: [...]}]`,
and optionally `shared: [...]`: ops drawn once per image and applied before the two branches, so both
views start from the same draw (SimCLR Fig. 5: one random crop, then the transformation under test on
one branch only).
Each op is `name` or `{name: {param: value, ...}}`. A policy may `extends: other.yaml` and then
`remove: [op, ...]`, `override: {op: {param: value}}` and `add: [op entries]` (inserted before a
trailing normalize), so an ablation arm is a small diff of its base.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from simclr.augment import ops_geometric, ops_photometric  # noqa: F401  (registers the ops)
from simclr.augment.registry import REGISTRY
from simclr.config.files import read_yaml
from simclr.config.schema import ConfigError, build, join, suggest, to_dict

SHIPPED_DIR = files("simclr") / "policies"  # package data: found in wheels and editable installs alike
TOP_KEYS = ("name", "description", "extends", "shared", "ops", "views", "remove", "override", "add")


@dataclass(frozen=True)
class OpConfig:
    name: str
    params: Any  # the op's frozen Params dataclass

    def to_dict(self) -> dict:
        return {self.name: to_dict(self.params)}


@dataclass(frozen=True)
class Policy:
    name: str
    views: tuple[tuple[OpConfig, ...], tuple[OpConfig, ...]]
    description: str = ""
    source: str = "<dict>"
    shared: tuple[OpConfig, ...] = ()  # drawn once per image, applied before both views

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.shared:
            out["shared"] = [o.to_dict() for o in self.shared]
        if self.views[0] == self.views[1]:
            out["ops"] = [o.to_dict() for o in self.views[0]]
        else:
            out["views"] = [{"ops": [o.to_dict() for o in v]} for v in self.views]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, allow_unicode=True)

    def op_names(self) -> list[str]:
        seen: list[str] = []
        for view in (self.shared, *self.views):
            seen += [o.name for o in view if o.name not in seen]
        return seen


def _split_entry(entry: Any, path: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{path}.{name}: expected a mapping of parameters, got {params!r}.")
        return str(name), params
    raise ConfigError(f"{path}: an op is written `name` or `{{name: {{param: value}}}}`, got {entry!r}.")


def parse_op(entry: Any, path: str) -> OpConfig:
    name, params = _split_entry(entry, path)
    if name not in REGISTRY:
        raise ConfigError(f"{path}: unknown op '{name}'.{suggest(name, REGISTRY)}")
    return OpConfig(name, build(REGISTRY[name].Params, params, path))


def _parse_view(entries: Any, path: str) -> tuple[OpConfig, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list of ops, got {entries!r}.")
    ops = tuple(parse_op(e, join(path, i)) for i, e in enumerate(entries))
    for i, op in enumerate(ops[:-1]):
        if op.name == "normalize":
            raise ConfigError(f"{join(path, i)}: normalize must be the last op of a view (later ops expect [0, 1] pixels).")
    return ops


def crop_size(view: tuple[OpConfig, ...]) -> int | None:
    """The output side a view's (last) crop resizes to, or None if the view keeps the input size."""
    sizes = [o.params.size for o in view if o.name == "random_resized_crop" and o.params.size]
    return sizes[-1] if sizes else None


def input_size(policy: Policy, image_size: int | None) -> int | None:
    """The side of the images the encoder sees: the policy's crop size (both views share it), else the
    images' own side `image_size`."""
    return crop_size(policy.shared + policy.views[0]) or image_size


def from_dict(raw: Any, source: str = "<dict>", _seen: tuple[str, ...] = ()) -> Policy:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a policy is a mapping with `ops` or `views`, got {type(raw).__name__}.")
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source}: {key}: unknown key.{suggest(str(key), TOP_KEYS)}")
    name = str(raw.get("name") or Path(source).stem)
    try:
        if "extends" in raw:
            shared, views = _apply_diff(raw, source, _seen)
        else:
            shared = _parse_shared(raw["shared"]) if "shared" in raw else ()
            for key in ("remove", "override", "add"):
                if key in raw:
                    raise ConfigError(f"{key}: only allowed together with `extends`.")
            if ("ops" in raw) == ("views" in raw):
                raise ConfigError("give exactly one of `ops` (both views) or `views` (two lists).")
            if "ops" in raw:
                view = _parse_view(raw["ops"], "ops")
                views = (view, view)
            else:
                if not isinstance(raw["views"], list) or len(raw["views"]) != 2:
                    raise ConfigError(f"views: expected a list of two views, got {raw['views']!r}.")
                views = tuple(_parse_view(_view_ops(v, join("views", i)), join(join("views", i), "ops"))
                              for i, v in enumerate(raw["views"]))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    sizes = {crop_size(shared + v) for v in views}
    if len(sizes) > 1:
        raise ConfigError(f"{source}: the two views would have different sizes {sorted(sizes, key=str)}; "
                          "give both crops the same `size`.")
    return Policy(name=name, views=views, description=str(raw.get("description", "")), source=source,
                  shared=shared)


def _parse_shared(entries: Any) -> tuple[OpConfig, ...]:
    ops = _parse_view(entries, "shared")
    for i, op in enumerate(ops):
        if op.name == "normalize":
            raise ConfigError(f"{join('shared', i)}: normalize belongs at the end of each view, not in `shared`.")
    return ops


def _view_ops(view: Any, path: str) -> Any:
    if not isinstance(view, dict) or set(view) != {"ops"}:
        raise ConfigError(f"{path}: each view is a mapping with one key `ops`, got {view!r}.")
    return view["ops"]


def _apply_diff(raw: dict, source: str, seen: tuple[str, ...]) -> tuple:
    """-> (shared ops, views) of the base after remove/override (which reach `shared` too) and add (views)."""
    if "ops" in raw or "views" in raw or "shared" in raw:
        raise ConfigError("with `extends`, change the base with remove/override/add, not ops/views/shared.")
    base_path = resolve_path(str(raw["extends"]), relative_to=Path(source).parent if source != "<dict>" else None)
    base = load(base_path, _seen=seen + (source,))
    present = base.op_names()
    views = [list(v) for v in (*base.views, base.shared)]  # the last entry is `shared`
    remove = raw.get("remove") or []
    if not isinstance(remove, list):
        raise ConfigError(f"remove: expected a list of op names, got {remove!r}.")
    for i, name in enumerate(remove):
        if name not in present:
            raise ConfigError(f"remove[{i}]: '{name}' is not in base policy '{base.name}'.{suggest(str(name), present)}")
        views = [[o for o in v if o.name != name] for v in views]
    override = raw.get("override") or {}
    if not isinstance(override, dict):
        raise ConfigError(f"override: expected a mapping op -> params, got {override!r}.")
    for name, params in override.items():
        if name not in present:
            raise ConfigError(f"override.{name}: not in base policy '{base.name}'.{suggest(str(name), present)}")
        if not isinstance(params, dict):
            raise ConfigError(f"override.{name}: expected a mapping of parameters, got {params!r}.")
        views = [[OpConfig(o.name, build(REGISTRY[name].Params, {**to_dict(o.params), **params}, f"override.{name}"))
                  if o.name == name else o for o in v] for v in views]
    added = raw.get("add") or []
    if not isinstance(added, list):
        raise ConfigError(f"add: expected a list of ops, got {added!r}.")
    new_ops = [parse_op(e, join("add", i)) for i, e in enumerate(added)]
    *views, shared = views
    for v in views:
        cut = len(v) - 1 if v and v[-1].name == "normalize" else len(v)
        v[cut:cut] = new_ops
    for i, v in enumerate(views):
        if not v:
            raise ConfigError(f"view {i} has no ops left after remove.")
    return tuple(shared), tuple(tuple(v) for v in views)


def shipped() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in SHIPPED_DIR.iterdir() if p.name.endswith(".yaml"))


def resolve_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A policy file path, trying: as given, next to the extending file, then the shipped policies, by
    name (`simclr_cifar`, `simclr_cifar.yaml`) or by the old source-tree path (`augment_policies/x.yaml`).
    A path into any other folder is never swapped for a shipped policy of the same file name: a mistyped
    path to the user's own policy must fail, not silently train another policy."""
    given = Path(name_or_path)
    candidates = [given]
    if relative_to is not None:
        candidates.append(relative_to / name_or_path)
    if given.parent == Path(".") or given.parent.name == "augment_policies":
        candidates += [Path(str(SHIPPED_DIR / given.name)), Path(str(SHIPPED_DIR / f"{given.name}.yaml"))]
    for c in candidates:
        if c.is_file():
            return c
    if Path(name_or_path).is_dir():
        raise ConfigError(f"policy '{name_or_path}': is a directory; give a policy YAML file or a shipped name "
                          f"({', '.join(shipped())}).")
    raise ConfigError(f"policy '{name_or_path}' not found (looked at {', '.join(str(c) for c in candidates)}). "
                      f"Shipped policies: {', '.join(shipped())}.")


def load(path: str | Path, _seen: tuple[str, ...] = ()) -> Policy:
    path = resolve_path(str(path))
    source = str(path)
    if source in _seen:
        raise ConfigError(f"{source}: `extends` forms a cycle: {' -> '.join(_seen + (source,))}.")
    return from_dict(read_yaml(path, "policy file"), source, _seen)
