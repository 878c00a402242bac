"""Reading the YAML files a user writes, and checking the names that become paths.

Every simclr YAML (run configs, policies, ablation specs) is read by `read_yaml`, so a repeated key is an
error everywhere: PyYAML's safe_load keeps the last of two equal keys, which silently dropped an ablation arm.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from simclr.config.schema import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a mapping with a repeated key is refused, naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key '{key}' appears twice (also on line {seen[key]}); "
                                  "keep one (YAML would silently keep only the last).")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """Parse `path` (must be a regular file); errors are one ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a {what}.")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found.")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {what} ({e}).") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+,@-]*")


def check_name(name: str, key: str) -> str:
    """A name that becomes one path component (run, arm, ablation): no separators, no `..`, nothing hidden."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.strip(".") == "" or ".." in name \
            or len(name) > 200:
        raise ConfigError(f"{key}: {name!r} is not a valid name; it becomes a folder name on every filesystem "
                          "and cluster it may go to, so use ASCII letters (A-Z, a-z), digits and _ . = + , @ - "
                          "(one path component: no '/', '\\', '..', and not starting with '.' or '-').")
    return name


def inside(path: Path, root: Path, key: str) -> Path:
    """`path`, after checking it resolves to a place under `root` (nothing is written outside it)."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{key}: {path} would lie outside {root}.")
    return path


def writable_dir(path: Path, key: str) -> None:
    """Refuse an output folder that cannot be created because some part of it is a regular file."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key}: {path} cannot be a folder because {parent} is a file; choose another "
                                  "folder.")
            return
