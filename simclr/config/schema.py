"""Validate plain dicts (from YAML/omegaconf) against frozen dataclass schemas.

One checker serves run configs, augmentation-op parameters and ablation specs, so every
user-written file fails the same way: one `ConfigError` naming the full dotted path
(`views[1].ops[2].brightness`), what was wrong, and what would be valid. Nothing unknown
is ever ignored and nothing is silently defaulted.

Field metadata understood here:
  range=(lo, hi)     inclusive numeric bounds (None for open)
  help="..."         shown in error messages
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A user-written config, policy or spec is invalid. The message names the exact key."""


class FieldError(ValueError):
    """Raised by a schema's `__post_init__` for a cross-field check on `key`."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def suggest(word: str, options: typing.Iterable[str]) -> str:
    options = sorted(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid: {', '.join(options)}."


def field_range(f: dataclasses.Field) -> tuple[Any, Any] | None:
    return f.metadata.get("range")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _check_range(value: Any, rng: tuple[Any, Any] | None, path: str) -> None:
    if rng is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = rng
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{path}: {value} is out of range; allowed [{lo_s}, {hi_s}].")


def coerce(value: Any, tp: Any, path: str, rng: tuple[Any, Any] | None = None) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, path, rng)
    if origin is Literal:
        return _coerce_literal(value, tp, path)
    if origin is tuple:
        return _coerce_tuple(value, tp, path, rng)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}.")
        return {coerce(k, key_tp, path): coerce(v, val_tp, join(path, str(k)), rng) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp in _SCALARS:
        return _SCALARS[tp](value, path, rng)
    raise TypeError(f"schema type {tp!r} at {path} is not supported")  # a bug in our schema, not user input


def _coerce_union(value: Any, tp: Any, path: str, rng) -> Any:
    """The first member type that takes `value`; a lone member's own error, else one naming the union."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, path, rng)
        except ConfigError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{path}: {value!r} is not a valid {_type_name(tp)}.")


def _coerce_literal(value: Any, tp: Any, path: str) -> Any:
    allowed = typing.get_args(tp)
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in allowed:
        value = str(value)  # e.g. precision: 32 written without quotes
    if value in allowed and type(value) is type(allowed[allowed.index(value)]):
        return value
    close = suggest(str(value), [str(a) for a in allowed])
    raise ConfigError(f"{path}: {value!r} is not allowed.{close}")


def _coerce_tuple(value: Any, tp: Any, path: str, rng) -> tuple:
    """`tuple[X, ...]` (any length) or a fixed-length `tuple[X, Y]`; each item checked at its own index."""
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}.")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], join(path, i), rng) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {len(value)} values {list(value)!r}.")
    return tuple(coerce(v, a, join(path, i), rng) for i, (v, a) in enumerate(zip(value, args, strict=True)))


def _coerce_bool(value: Any, path: str, rng) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}.")
    return value


def _coerce_int(value: Any, path: str, rng) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int to Python, not to a config
        raise ConfigError(f"{path}: expected an integer, got {value!r}.")
    _check_range(value, rng, path)
    return value


def _coerce_float(value: Any, path: str, rng) -> float:
    if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {value!r}.")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{path}: {value} is not allowed; give a finite number.")
    _check_range(value, rng, path)
    return value


def _coerce_str(value: Any, path: str, rng) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {value!r}.")
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def build(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass `cls` from mapping `data`, checking keys, types and ranges."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{join(path, str(key))}: unknown key.{suggest(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], join(path, name), field_range(f))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_ = f.metadata.get("help")
            raise ConfigError(f"{join(path, name)}: required key is missing" + (f" ({help_})." if help_ else "."))
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ConfigError(f"{join(path, e.key)}: {e}") from None


def describe(cls: type) -> list[str]:
    """One line per field: name, type, default, range and help — for docs and `--help`."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        rng = field_range(f)
        rng_s = f" in [{rng[0]}, {rng[1]}]" if rng else ""
        help_ = f" — {f.metadata['help']}" if "help" in f.metadata else ""
        lines.append(f"{f.name}: {_type_name(hints[f.name])} = {default!r}{rng_s}{help_}")
    return lines


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested, with tuples) → plain YAML-friendly containers."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
