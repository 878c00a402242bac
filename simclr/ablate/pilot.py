"""The pilot of `simclr ablate plan`: which arms it trains, running it, and how an earlier study used as a pilot
differs from the spec being planned (its settings, its methods), so the plan says when its spread is another's."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from simclr.ablate.arms import Arm, reference_arm
from simclr.ablate.launch import launch_tasks
from simclr.ablate.runner import ablation_dir, make_tasks
from simclr.ablate.spec import AblationSpec, method_overrides
from simclr.config.files import read_yaml
from simclr.config.run import load_config
from simclr.config.schema import ConfigError, suggest, to_dict
from simclr.runs.layout import config_path


def pilot_arms(spec: AblationSpec, arms: list[Arm], other: str | None = None) -> list[Arm]:
    """The reference arm and `other` (default: the first other arm in the spec's order; its first arm
    evaluates the floors)."""
    ref = reference_arm(spec, arms)
    method = next(arm.meta.get("method") for arm in arms if arm.name == ref)
    # with a method axis: the reference method's arms (a policy effect, not a method difference)
    others = [arm.name for arm in arms if arm.name != ref and arm.meta.get("method") == method]
    if not others:
        raise ConfigError(f"arms: the spec has one arm ('{ref}'); paired comparisons, and so a plan, need two.")
    if other is not None and other not in others:
        raise ConfigError(f"--pilot-arm: '{other}' is not an arm of {spec.name} other than its reference "
                          f"'{ref}'.{suggest(other, others)}")
    return [arm for arm in arms if arm.name in (ref, other or others[0])]


def run_pilot(spec: AblationSpec, arms: list[Arm], spec_path: Path, n_seeds: int, other: str | None = None) -> Path:
    """Train and evaluate the pilot arms on n_seeds seeds (the spec's first, then the smallest unused ones)
    into <output_dir>/<name>-pilot; finished runs there are kept, so a rerun only adds what is missing."""
    chosen = pilot_arms(spec, arms, other)
    seeds = [*spec.seeds, *(s for s in range(len(spec.seeds) + n_seeds) if s not in spec.seeds)][:n_seeds]
    pilot = dataclasses.replace(spec, name=f"{spec.name}-pilot", seeds=tuple(seeds),
                                reference=reference_arm(spec, arms))
    root = ablation_dir(pilot)
    print(f"pilot: arms {', '.join(a.name for a in chosen)} x seeds {seeds} -> {root}", flush=True)
    launch_tasks(pilot, chosen, root, make_tasks(pilot, chosen, root), spec_path,
                 f"simclr ablate plan {spec_path} --pilot-seeds {n_seeds}" + (f" --pilot-arm {other}" if other else ""))
    return root


def _first_run_config(entries: list[dict]) -> tuple[dict | None, dict | None]:
    """(an earlier study's first finished run, its config.yaml as written); a missing or damaged file gives None:
    it says nothing about the scale, and the spread is still the pilot's."""
    entry = next((e for e in entries if e.get("run_dir")), None)
    path = config_path(entry["run_dir"]) if entry else None
    if path is None or not path.is_file():
        return entry, None
    try:
        ran = read_yaml(path, "config file")
    except ConfigError:
        return entry, None
    return entry, ran if isinstance(ran, dict) else None


def methods_not_piloted(spec: AblationSpec, info: dict, entries: list[dict]) -> list[str]:
    """The spec's methods no pilot run trained. A pilot without a method axis ran one method: the one its first
    run's config.yaml records (SimCLR in one from before methods existed; the spec's base method with no record)."""
    piloted = {(i.get("meta") or {}).get("method") for i in info.values()} - {None}
    if not piloted:
        _, ran = _first_run_config(entries)
        name = (ran.get("method") or {}).get("name", "simclr") if ran is not None else None
        piloted = {name if isinstance(name, str) else load_config(spec.base_config, spec.overrides).method.name}
    return [m for m in spec.methods if m not in piloted]


def settings_differ(spec: AblationSpec, entries: list[dict]) -> list[str]:
    """'key: pilot -> spec' for training settings of an earlier study's first run that the spec sets otherwise
    (its spread and time per run were measured at another scale)."""
    entry, ran = _first_run_config(entries)
    if ran is None:
        return []
    method = (entry.get("meta") or {}).get("method")  # compared with the spec's settings for that run's method
    cfg = load_config(spec.base_config, method_overrides(spec, method if method in spec.methods else None))
    out = []
    for section in ("method", "data", "model", "loss", "optim", "trainer", "eval"):
        old, new = ran.get(section) or {}, to_dict(getattr(cfg, section))
        for k in sorted(set(old) | set(new)):
            if k not in old and new.get(k) == _default(type(getattr(cfg, section)), k):
                continue  # a key newer than the pilot, at its default: the pilot ran as that default does
            if old.get(k) != new.get(k) and not (section == "trainer" and k in ("precision", "channels_last")):
                out.append(f"{section}.{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return out


def _default(section: type, key: str):
    f = next((f for f in dataclasses.fields(section) if f.name == key), None)
    if f is None or f.default is dataclasses.MISSING:
        return to_dict(f.default_factory()) if f is not None and f.default_factory is not dataclasses.MISSING else None
    return to_dict(f.default)
