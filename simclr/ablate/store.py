"""An ablation directory remembers what it ran: `spec.resolved.yaml` holds the spec, the base run config
and every arm's resolved policy. A rerun with anything different refuses with a diff (or, asked to, moves
on to a fresh `name-N` directory), so results are never reported under a spec that did not produce them.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from simclr.ablate.arms import Arm
from simclr.ablate.spec import AblationSpec
from simclr.config.files import parse_yaml, read_yaml, same_file
from simclr.config.run import RunConfig, as_stored, load_config
from simclr.config.schema import ConfigError, build, to_dict
from simclr.runs.layout import CONFIG

RECORD = "spec.resolved.yaml"
AUTO_KEYS = ("precision", "channels_last")  # trainer keys whose `auto` train.run resolves on the machine it runs on


def resolved_record(spec: AblationSpec, arms: list[Arm]) -> str:
    return yaml.safe_dump({"spec": to_dict(spec),
                           "base_config": to_dict(load_config(spec.base_config, spec.overrides)),
                           "arms": {a.name: a.policy.to_dict() for a in arms}}, sort_keys=True)


def _recorded(root: Path) -> str | None:
    """The record a directory holds; for a directory made before records existed, its spec.yaml's resolved
    spec (arms and base config unknown, so only the spec itself can be compared)."""
    if (root / RECORD).is_file():
        return (root / RECORD).read_text()
    if (root / "spec.yaml").is_file():
        legacy = build(AblationSpec, parse_yaml((root / "spec.yaml").read_text(), str(root / "spec.yaml")))
        return yaml.safe_dump({"spec": to_dict(legacy)}, sort_keys=True)
    return None


def _comparable(old: dict, new: dict) -> tuple[dict, dict]:
    """The two records without what cannot change a result: base-config keys a newer simclr added (absent
    from the old record) at their default value, `auto` precision keys, and stream-only data keys of in-memory
    runs."""
    old_cfg, new_cfg = old.get("base_config"), new.get("base_config")
    if not (isinstance(old_cfg, dict) and isinstance(new_cfg, dict)):
        return old, new
    defaults = _defaults(RunConfig)
    new_cfg = {section: ({k: v for k, v in values.items() if k in old_cfg.get(section, {})
                          or v != defaults.get(section, {}).get(k, object())}
                         if isinstance(values, dict) else values) for section, values in new_cfg.items()}
    # a whole section a newer simclr added (`method`), left empty above because all of it is at its defaults
    new_cfg = {section: values for section, values in new_cfg.items() if section in old_cfg or values != {}}
    # `auto` precision keys are resolved per machine when each run starts (its config.yaml holds what it used): a
    # study recorded with the values they resolve to, or with the explicit `32` of older simclr, is the same study
    old_trainer, new_trainer = old_cfg.get("trainer"), new_cfg.get("trainer")
    if isinstance(old_trainer, dict) and isinstance(new_trainer, dict):
        new_cfg = {**new_cfg, "trainer": {**new_trainer, **{k: old_trainer[k] for k in AUTO_KEYS
                                                           if new_trainer.get(k) == "auto" and k in old_trainer}}}
    # stream-only keys do nothing with the in-memory loader: a directory that ran with data.loader=memory is
    # not a different study because a later simclr changed their defaults (decode_device, which as_stored
    # keeps, is cpu in every valid in-memory config, or absent from an older record and dropped above)
    return {**old, "base_config": as_stored(old_cfg)}, {**new, "base_config": as_stored(new_cfg)}


def pinned_precision(root: Path, trainer: dict) -> tuple[str, ...]:
    """Overrides that keep a study's remaining arms at the precision its first ones trained with, where the spec
    (`trainer`: its base config's trainer section) says `auto`: one study, one precision, so its arms stay
    comparable even when they run on machines that resolve `auto` differently. The values come from the
    recorded spec when it holds them explicitly (every study before `auto` existed), else from the first run's
    config.yaml (which holds them resolved)."""
    recorded = _recorded(root) if root.exists() else None
    old = (yaml.safe_load(recorded) or {}).get("base_config") if recorded else None
    pins = precision_pins(old.get("trainer") if isinstance(old, dict) else None, trainer)
    first = min(root.glob(f"runs/*/{CONFIG}"), default=None) if root.exists() else None
    if pins or first is None:
        return pins
    ran = read_yaml(first, "config file")
    return precision_pins(ran.get("trainer") if isinstance(ran, dict) else None, trainer)


def precision_pins(recorded: dict | None, trainer: dict) -> tuple[str, ...]:
    """`trainer.KEY=VALUE` overrides for the AUTO_KEYS that `trainer` leaves at auto and the `recorded` trainer
    section (of a study's earlier runs) holds explicitly."""
    if not isinstance(recorded, dict):
        return ()
    return tuple(f"trainer.{k}={str(recorded[k]).lower()}" for k in AUTO_KEYS
                 if trainer.get(k) == "auto" and recorded.get(k, "auto") != "auto")


def _defaults(cls) -> dict:
    """Default values of a (nested) config dataclass, as to_dict writes them."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out[f.name] = _defaults(f.default_factory)
    return out


def _same(recorded: str, record: str) -> bool:
    if recorded == record:
        return True
    old, new = yaml.safe_load(recorded), yaml.safe_load(record)
    old_spec, new_spec = old.get("spec"), new.get("spec")
    if isinstance(old_spec, dict) and isinstance(new_spec, dict) and "base_config" in old_spec and (
            "base_config" in old or same_file(str(old_spec["base_config"]), str(new_spec.get("base_config")))):
        # one base config written two ways (relative to the working directory then, to the spec now, or run from
        # elsewhere): the same study. With the config's contents on record, those are compared instead.
        old = {**old, "spec": {**old_spec, "base_config": new_spec.get("base_config")}}
    if set(old) == {"spec"}:
        return old["spec"] == new["spec"]
    old, new = _comparable(old, new)
    return old == new


def study_folder(root: Path, record: str, spec_path: Path, new_dir: bool) -> Path:
    """The directory this spec runs in: `root` if it is new or ran this very spec before; otherwise an error
    with the diff, or (new_dir) the first `root-N` that is new or ran this spec. Reads only."""
    def fits(folder: Path) -> bool:
        recorded = _recorded(folder) if folder.exists() else None
        return recorded is None or _same(recorded, record)

    if not fits(root):
        if not new_dir:
            diff = difflib.unified_diff(_recorded(root).splitlines(), record.splitlines(),
                                        f"{root / RECORD} (ran before)", f"{spec_path} (now)", lineterm="", n=1)
            lines = list(diff)
            shown = "\n".join(lines[:40]) + (f"\n... ({len(lines) - 40} more diff lines)" if len(lines) > 40 else "")
            raise ConfigError(f"{spec_path}: the ablation directory {root} holds results of a different spec; "
                              "nothing was changed. Rerun with --new-dir to continue into a new directory, or give "
                              f"the spec another `name`. What changed:\n{shown}")
        n = 2
        while not fits(root.with_name(f"{root.name}-{n}")):
            n += 1
        root = root.with_name(f"{root.name}-{n}")
        print(f"{spec_path}: {root.with_name(root.name.rsplit('-', 1)[0])} ran a different spec; continuing in {root}")
    return root


def claim(root: Path, record: str, spec_path: Path, new_dir: bool) -> Path:
    """study_folder(), then that directory made and its record (spec.resolved.yaml, spec.yaml) written where
    missing. `simclr ablate` claims under the study's launch lock (simclr.ablate.lock), with new_dir=False on the
    folder it chose, so a different spec claimed there in between is refused, not run into it."""
    root = study_folder(root, record, spec_path, new_dir)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / RECORD).is_file():
        (root / RECORD).write_text(record)
    if not (root / "spec.yaml").is_file():
        (root / "spec.yaml").write_text(spec_path.read_text())
    return root
