"""Geometric ops: crop, flips, rotation, erasing. Parameters follow torchvision's semantics."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kornia.geometry.transform import rotate

from simclr.config.schema import FieldError
from simclr.augment.registry import PROBABILITY, Op, check_interval, register, uniform

ATTEMPTS = 10  # torchvision's rejection-sampling attempts for crop/erase boxes


def sample_boxes(gen, batch, height, width, scale, ratio, device, *, strict: bool):
    """torchvision's rejection sampler for (top, left, h, w), vectorised over the batch.

    Draws ATTEMPTS candidates per sample (a fixed amount of randomness) and keeps the first valid
    one. `strict=False` is RandomResizedCrop's rule (box fits: 0 < w <= W); `strict=True` is
    RandomErasing's (box strictly smaller than the image). Returns ints (B,) and `found` (B,).
    """
    area = height * width
    target = area * uniform(gen, (batch, ATTEMPTS), scale[0], scale[1], device)
    log_r = uniform(gen, (batch, ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]), device)
    u_top, u_left = torch.rand((2, batch, ATTEMPTS), generator=gen, device=device)
    aspect = torch.exp(log_r)
    if strict:  # RandomErasing: h from area*aspect
        h = torch.round(torch.sqrt(target * aspect))
        w = torch.round(torch.sqrt(target / aspect))
        ok = (h < height) & (w < width)
    else:       # RandomResizedCrop: w from area*aspect
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int64).argmax(dim=1, keepdim=True)        # first valid attempt
    found = ok.any(dim=1)
    pick = lambda t: t.gather(1, first).squeeze(1)                # noqa: E731
    h, w = pick(h), pick(w)
    top = torch.floor(pick(u_top) * (height - h + 1))
    left = torch.floor(pick(u_left) * (width - w + 1))
    return top, left, h, w, found


def box_draws(params, x: torch.Tensor, gen: torch.Generator, strict: bool) -> dict[str, torch.Tensor]:
    """`sample_boxes` for an op whose params have `scale` and `ratio`, as a draws dict."""
    _, _, height, width = x.shape
    boxes = sample_boxes(gen, x.shape[0], height, width, params.scale, params.ratio, x.device, strict=strict)
    return dict(zip(("top", "left", "h", "w", "found"), boxes))


def center_fallback(height, width, ratio):
    """torchvision's RandomResizedCrop fallback when no attempt fits: a central crop."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resample_boxes(x: torch.Tensor, x1, y1, x2, y2, out_hw: tuple[int, int],
                   mirror: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear crop-and-resize of per-sample axis-aligned boxes (inclusive pixel corners), batched.

    Same mapping as Kornia's `crop_and_resize(..., align_corners=True)` (box corners -> output
    corners; tests/test_augment_reference.py checks it), but an axis-aligned box's sampling grid is
    an outer product of per-sample x and y coordinates, so it is built directly instead of through
    a general 3x3 perspective solve + warp: ~3x faster on CPU, which is most of a CPU crop's cost.
    """
    batch, _, height, width = x.shape
    oh, ow = out_hw
    ty = torch.linspace(0, 1, oh, device=x.device, dtype=x.dtype)
    tx = torch.linspace(0, 1, ow, device=x.device, dtype=x.dtype)
    xs = (x1.to(x.dtype)[:, None] + (x2 - x1).to(x.dtype)[:, None] * tx) * (2.0 / max(width - 1, 1)) - 1.0   # (B, ow)
    ys = (y1.to(x.dtype)[:, None] + (y2 - y1).to(x.dtype)[:, None] * ty) * (2.0 / max(height - 1, 1)) - 1.0  # (B, oh)
    if mirror is not None:  # (B,) bool: sample those columns right to left = the crop flipped, exactly
        xs = torch.where(mirror[:, None], xs.flip(-1), xs)
    grid = torch.stack([xs[:, None, :].expand(batch, oh, ow), ys[:, :, None].expand(batch, oh, ow)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@dataclass(frozen=True)
class CropParams:
    size: int | None = field(default=None, metadata={"range": (1, 4096), "help": "output side; null keeps the input size"})
    scale: tuple[float, float] = field(default=(0.08, 1.0), metadata={"range": (0.0, 1.0)})
    ratio: tuple[float, float] = field(default=(3 / 4, 4 / 3), metadata={"range": (1e-3, 1e3)})
    p: float = field(default=1.0, metadata=PROBABILITY)

    def __post_init__(self):
        check_interval("scale", self.scale)
        check_interval("ratio", self.ratio)
        if self.scale[0] <= 0:
            raise FieldError("scale", f"min {self.scale[0]} must be > 0 (a zero-area crop has no pixels); "
                             "e.g. [0.08, 1.0].")


@register
class RandomResizedCrop(Op):
    """Crop a random area fraction `scale` with aspect `ratio`, resize to `size` (bilinear).

    One batched resample for all boxes (Kornia's cropping_mode="resample" semantics, see
    `resample_boxes`), not per-image slicing. Images not selected (p < 1) are resized whole.
    """
    name = "random_resized_crop"
    Params = CropParams

    def sample(self, x, gen):
        _, _, height, width = x.shape
        d = box_draws(self.params, x, gen, strict=False)
        fallback = center_fallback(height, width, self.params.ratio)  # torchvision's central crop
        for key, value in zip(("top", "left", "h", "w"), fallback):
            d[key] = torch.where(d["found"], d[key], torch.full_like(d[key], value))
        return d

    fresh_output = True  # never returns or writes its input

    def apply(self, x, d, applied, mirror=None):
        _, _, height, width = x.shape
        top, left = torch.where(applied, d["top"], 0), torch.where(applied, d["left"], 0)
        h, w = torch.where(applied, d["h"], height), torch.where(applied, d["w"], width)
        out_hw = (self.params.size, self.params.size) if self.params.size else (height, width)
        out = resample_boxes(x, left, top, left + w - 1, top + h - 1, out_hw, mirror)
        if out_hw == (height, width):  # images not selected stay exactly themselves
            out = torch.lerp(x, out, applied.to(x.dtype).view(-1, 1, 1, 1))
        return out

    def apply_selected(self, x, d, applied, mirror=None):
        """Unselected images are resized whole, not skipped. `mirror` (B,) bool: flip those crops
        horizontally for free (a following horizontal_flip's selection, see pipeline.run_ops)."""
        return self.apply(x, d, applied, mirror)

    def can_take_flip(self) -> bool:
        """A flip right after this crop can be folded into it: no whole-image lerp follows the resample."""
        return self.params.p == 1.0

    def out_shape(self, shape):
        return (*shape[:2], self.params.size, self.params.size) if self.params.size else shape


@dataclass(frozen=True)
class FlipParams:
    p: float = field(default=0.5, metadata=PROBABILITY)


@register
class HorizontalFlip(Op):
    name = "horizontal_flip"
    Params = FlipParams

    def transform(self, x, draws):
        return x.flip(-1)


@register
class VerticalFlip(Op):
    name = "vertical_flip"
    Params = FlipParams

    def transform(self, x, draws):
        return x.flip(-2)


@dataclass(frozen=True)
class RotationParams:
    degrees: tuple[float, float] = field(default=(-30.0, 30.0), metadata={"range": (-360.0, 360.0),
                                         "help": "angle range in degrees, [min, max]"})
    angles: tuple[float, ...] = field(default=(), metadata={"range": (-360.0, 360.0), "help":
                                      "if given, one of these angles, uniformly (SimCLR: [90, 180, 270]); "
                                      "replaces `degrees`"})
    p: float = field(default=0.5, metadata=PROBABILITY)

    def __post_init__(self):
        check_interval("degrees", self.degrees)


@register
class Rotation(Op):
    """Rotate by a uniform angle in `degrees` (or one of `angles`) about the centre; corners filled with 0."""
    name = "rotation"
    Params = RotationParams

    def sample(self, x, gen):
        u = torch.rand((x.shape[0],), generator=gen, device=x.device)  # one draw per image either way
        if self.params.angles:
            choices = torch.tensor(self.params.angles, device=x.device)
            return {"angle": choices[(u * len(choices)).long().clamp_max(len(choices) - 1)]}
        lo, hi = self.params.degrees
        return {"angle": lo + (hi - lo) * u}

    def transform(self, x, draws):
        return rotate(x, draws["angle"].to(x.dtype), mode="bilinear", padding_mode="zeros")


@dataclass(frozen=True)
class ErasingParams:
    scale: tuple[float, float] = field(default=(0.02, 0.33), metadata={"range": (0.0, 1.0)})
    ratio: tuple[float, float] = field(default=(0.3, 3.3), metadata={"range": (1e-3, 1e3)})
    value: float = field(default=0.0, metadata={"range": (0.0, 1.0), "help": "fill value in [0, 1] image units"})
    p: float = field(default=0.5, metadata=PROBABILITY)

    def __post_init__(self):
        check_interval("scale", self.scale)
        check_interval("ratio", self.ratio)


@register
class RandomErasing(Op):
    """Cutout / random erasing (Zhong et al. 2020) with torchvision's box sampler."""
    name = "random_erasing"
    Params = ErasingParams

    def sample(self, x, gen):
        return box_draws(self.params, x, gen, strict=True)

    def transform(self, x, d):
        rows = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
        cols = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
        t, l, h, w = (d[k].view(-1, 1, 1) for k in ("top", "left", "h", "w"))
        box = (rows >= t) & (rows < t + h) & (cols >= l) & (cols < l + w) & d["found"].view(-1, 1, 1)
        return torch.where(box.unsqueeze(1), torch.full_like(x, self.params.value), x)
