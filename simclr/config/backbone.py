"""`model.backbone` names: a built-in backbone, or `timm:<name>` for any timm model.

Checked when the config is read, so a typo, a missing timm or an unknown timm model fails in one line before
anything trains or is written. Whether the model can take the run's images (channels, a ViT's patch size)
depends on the data and is checked by `simclr.models.check_fits` once the data is loaded.
"""
from __future__ import annotations

import difflib

from simclr.config.schema import FieldError, suggest

# simclr.models.BACKBONES by name (config may not import models); tests/test_models.py checks they agree
BUILTIN_BACKBONES = ("small_cnn", "resnet18", "resnet34", "resnet50")
TIMM_PREFIX = "timm:"
EXAMPLE = "timm:resnet10t"


def check_backbone(name: str) -> None:
    """Raise FieldError on key `backbone` unless `name` is built in or an installed timm model."""
    if not name.startswith(TIMM_PREFIX):
        if name not in BUILTIN_BACKBONES:
            raise FieldError("backbone", f"'{name}' is not a backbone.{suggest(name, BUILTIN_BACKBONES)[:-1]}, "
                             f"or timm:<name> for a timm model (e.g. {EXAMPLE}).")
        return
    model = name.removeprefix(TIMM_PREFIX)
    if not model:
        raise FieldError("backbone", f"'{name}' names no model; write timm:<name>, e.g. {EXAMPLE}.")
    if "." in model:  # timm's `arch.tag` picks downloadable weights; simclr builds every model untrained
        arch = model.split(".", 1)[0]
        raise FieldError("backbone", f"'{name}': the tag '.{model.split('.', 1)[1]}' selects pretrained weights, "
                         f"which simclr never loads (pretrained=False); write timm:{arch}.")
    try:
        import timm  # optional dependency, imported only for timm backbones (about 4 s)
    except ImportError:
        raise FieldError("backbone", f"'{name}' needs timm, which is not installed: pip install timm "
                         "(or the extra simclr-augment[timm]).") from None
    if not timm.is_model(model):
        close = _close_names(model, timm.list_models())
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise FieldError("backbone", f"'{name}': timm {timm.__version__} has no model '{model}'.{hint} "
                         "timm.list_models('*pattern*') lists them.")


def _close_names(model: str, names: list[str], n: int = 5) -> list[str]:
    """Names that start with `model` (timm:vit_tiny -> vit_tiny_patch16_224), then near spellings (resnet10 ->
    resnet10t); each group closest first."""
    def closeness(c: str) -> float:
        return difflib.SequenceMatcher(None, model, c).ratio()
    starts = sorted((c for c in names if c.startswith(model)), key=closeness, reverse=True)
    return list(dict.fromkeys(starts + difflib.get_close_matches(model, names, n=n, cutoff=0.6)))[:n]
