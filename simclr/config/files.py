"""Reading the YAML files a user writes, and checking the names that become paths.

Every simclr YAML (run configs, policies, ablation specs) is read by `read_yaml`, so a repeated key is an
error everywhere: PyYAML's safe_load keeps the last of two equal keys, which silently dropped an ablation arm.
"""
from __future__ import annotations

import os
import re
from importlib.resources import files
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


SHIPPED_CONFIGS = files("simclr") / "configs"  # package data, like the policies: found in wheels too


def shipped_configs() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in SHIPPED_CONFIGS.iterdir() if p.name.endswith(".yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A run config path: as given, else (a bare name such as `digits_cpu` or `digits_cpu.yaml`) the shipped
    config of that name. A path into a folder is never swapped for a shipped config of the same file name."""
    given = Path(name_or_path)
    if given.exists() or given.parent != Path("."):
        return given
    for candidate in (SHIPPED_CONFIGS / given.name, SHIPPED_CONFIGS / f"{given.name}.yaml"):
        if candidate.is_file():
            return Path(str(candidate))
    raise ConfigError(f"{name_or_path}: config file not found, nor a shipped config of that name; shipped "
                      f"configs: {', '.join(shipped_configs())}.")


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


def beside_spec(folder: Path, value: str, key: str, what: str = "run config") -> str:
    """The file a spec's `key` names: a relative `value` lies in `folder`, the spec's own (so a spec runs the same
    from any working directory; nothing falls back to the working directory, which would make one spec mean two
    files). Returned relative to the working directory where it lies under it (as studies recorded it when paths
    were relative to the working directory), else absolute; jobs start in that directory (ArmTask.cwd)."""
    lexical = Path(os.path.normpath(Path(folder).absolute() / value))  # `configs/x/../y.yaml` as written
    folder = Path(folder).absolute().resolve()  # the folder as it really is: `..` steps out of that one
    path = Path(value) if Path(value).is_absolute() else folder / value
    if not path.is_file():
        found = "is a folder" if path.is_dir() else "not found"
        hint = f"write {os.path.relpath(Path(value).absolute(), folder)} for the one under the working directory" \
            if Path(value).is_file() else "give its path from there, or an absolute one"  # a spec from before the rule
        raise ConfigError(f"{key}: '{value}' {found}: looked for the {what} at {path} (a relative {key} is "
                          f"relative to the spec's folder, {folder}): {hint}.")
    path = path.parent.resolve() / path.name  # `..` resolved; the file keeps its own name even if it is a link
    if lexical != path and lexical.is_file() and lexical.samefile(path):
        path = lexical  # the same file through a linked folder (configs/ -> simclr/configs/): keep the path given
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def same_file(a: str, b: str) -> bool:
    """Whether two paths (relative to the working directory) name one file: a study recorded `configs/x.yaml`
    is not another study for being given /repo/configs/x.yaml now."""
    try:
        return a == b or Path(a).samefile(b)
    except OSError:  # either one is gone
        return False
