"""Photometric ops: colour jitter, grayscale, solarize, noise, blur, Sobel, normalize."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from kornia.enhance import normalize, solarize
from kornia.filters import gaussian_blur2d, get_gaussian_kernel1d, sobel

from simclr.augment.color import gray, jitter, jitter_selected
from simclr.augment.registry import PROBABILITY, Op, check_interval, register, uniform
from simclr.config.schema import FieldError

NON_NEGATIVE = (0.0, None)


@dataclass(frozen=True)
class JitterParams:
    brightness: float = field(default=0.8, metadata={"range": NON_NEGATIVE, "help": "factor in [1-b*s, 1+b*s]"})
    contrast: float = field(default=0.8, metadata={"range": NON_NEGATIVE})
    saturation: float = field(default=0.8, metadata={"range": NON_NEGATIVE})
    hue: float = field(default=0.2, metadata={"range": (0.0, 0.5), "help": "shift in [-h*s, h*s] turns"})
    s: float = field(default=1.0, metadata={"range": NON_NEGATIVE, "help": "SimCLR colour strength multiplier"})
    p: float = field(default=0.8, metadata=PROBABILITY)

    def __post_init__(self):
        if self.hue * self.s > 0.5:
            raise FieldError("hue", f"effective hue hue*s = {self.hue * self.s:g} exceeds 0.5 turns; lower hue or s.")


@register
class ColorJitter(Op):
    """torchvision ColorJitter semantics, SimCLR style: ranges are (0.8s, 0.8s, 0.8s, 0.2s) by default.

    Factors *and the order of the four sub-ops* are drawn per image (see color.py for how this
    stays as cheap as a fixed order).
    """
    name = "color_jitter"
    Params = JitterParams

    def sample(self, x, gen):
        q, b = self.params, x.shape[0]
        spans = [q.brightness * q.s, q.contrast * q.s, q.saturation * q.s]
        factors = [uniform(gen, (b,), max(0.0, 1 - a), 1 + a, x.device) for a in spans]
        factors.append(uniform(gen, (b,), -q.hue * q.s, q.hue * q.s, x.device))
        order = torch.rand((b, 4), generator=gen, device=x.device).argsort(dim=1)  # uniform permutation per image
        return {"factors": torch.stack(factors, dim=1), "order": order}

    def transform(self, x, d):
        return jitter(x, d["factors"], d["order"], use_hue=self.params.hue * self.params.s > 0)

    def apply_selected(self, x, d, applied):
        return jitter_selected(x, d["factors"], d["order"], self.params.hue * self.params.s > 0, applied)


@dataclass(frozen=True)
class GrayscaleParams:
    p: float = field(default=0.2, metadata=PROBABILITY)


@register
class Grayscale(Op):
    name = "grayscale"
    Params = GrayscaleParams

    def transform(self, x, d):
        return gray(x).expand_as(x)


@dataclass(frozen=True)
class SolarizeParams:
    threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0), "help": "pixels >= threshold are inverted"})
    p: float = field(default=0.2, metadata=PROBABILITY)


@register
class Solarize(Op):
    name = "solarize"
    Params = SolarizeParams

    def transform(self, x, d):
        return solarize(x, self.params.threshold)


@dataclass(frozen=True)
class NoiseParams:
    std: float = field(default=0.05, metadata={"range": NON_NEGATIVE, "help": "std of additive noise, [0,1] units"})
    p: float = field(default=0.5, metadata=PROBABILITY)


@register
class GaussianNoise(Op):
    """Additive N(0, std^2) pixel noise, clamped back to [0, 1]."""
    name = "gaussian_noise"
    Params = NoiseParams

    def sample(self, x, gen):
        return {"noise": torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)}

    def transform(self, x, d):
        return (x + self.params.std * d["noise"]).clamp_(0, 1)


@dataclass(frozen=True)
class BlurParams:
    kernel_frac: float = field(default=0.1, metadata={"range": (0.0, 1.0),
                               "help": "kernel side as a fraction of the image side (SimCLR: 0.1), made odd, >= 3"})
    sigma: tuple[float, float] = field(default=(0.1, 2.0), metadata={"range": (1e-3, 100.0)})
    p: float = field(default=0.5, metadata=PROBABILITY)

    def __post_init__(self):
        check_interval("sigma", self.sigma)


@register
class GaussianBlur(Op):
    name = "gaussian_blur"
    Params = BlurParams

    def sample(self, x, gen):
        return {"sigma": uniform(gen, (x.shape[0],), *self.params.sigma, x.device)}

    def transform(self, x, d):
        k = max(3, int(self.params.kernel_frac * min(x.shape[-2:])) // 2 * 2 + 1)
        if x.device.type == "cpu" and max(x.shape[-2:]) <= MATMUL_BLUR_MAX_SIDE:
            return blur_by_matmul(x, get_gaussian_kernel1d(k, d["sigma"].to(x.dtype).view(-1, 1)))
        sigma = d["sigma"].to(x.dtype).unsqueeze(1).expand(-1, 2)  # (B, 2): per-image sigma
        return gaussian_blur2d(x, (k, k), sigma, border_type="reflect")


# Up to this side a CPU blur is two batched matrix products with the kernel and the reflect border
# folded into an (n, n) matrix per image: about 2x the depthwise convolution at 96 px on this
# project's machine; at 224 px the n multiply-adds per pixel cost more than the convolution's k.
MATMUL_BLUR_MAX_SIDE = 128


def reflect_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(B, k) 1-D kernels -> (B, n, n) T with (x @ T)[..., i] = sum_j kernel[j] * x[..., reflect(i + j - k // 2)],
    reflect mirroring about the edge pixel without repeating it (torch's and kornia's 'reflect')."""
    b, k = kernel.shape
    i = torch.arange(n, device=kernel.device)
    src = (i[:, None] + torch.arange(k, device=kernel.device) - k // 2).abs()  # (n, k), mirrored at 0
    src = torch.minimum(src, 2 * (n - 1) - src)                               # and at n - 1
    flat = (src * n + i[:, None]).reshape(1, -1).expand(b, -1)
    t = torch.zeros(b, n * n, dtype=kernel.dtype, device=kernel.device)
    return t.scatter_add_(1, flat, kernel[:, None, :].expand(b, n, k).reshape(b, -1)).view(b, n, n)


def blur_by_matmul(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable per-image blur of x (B, C, H, W) by kernel (B, k), reflect border: rows, then columns."""
    b, c, h, w = x.shape
    if min(h, w) <= kernel.shape[1] // 2:
        raise ValueError(f"gaussian_blur: a {kernel.shape[1]}-tap kernel needs images larger than {h}x{w}")
    rows = torch.bmm(x.reshape(b, c * h, w), reflect_matrix(kernel, w)).view(b, c, h, w)
    return torch.matmul(reflect_matrix(kernel, h).transpose(1, 2).unsqueeze(1), rows)


@dataclass(frozen=True)
class SobelParams:
    p: float = field(default=0.5, metadata=PROBABILITY)


@register
class Sobel(Op):
    """Sobel edge magnitude per channel (SimCLR Fig. 4's Sobel filtering): sqrt(gx^2 + gy^2) of the
    normalised 3x3 Sobel kernels, replicate border, clamped to [0, 1]."""
    name = "sobel"
    Params = SobelParams

    def transform(self, x, d):
        return sobel(x, normalized=True).clamp_(0, 1)


@dataclass(frozen=True)
class NormalizeParams:
    mean: tuple[float, ...] = field(default=(0.485, 0.456, 0.406), metadata={"help": "per channel, or one value"})
    std: tuple[float, ...] = field(default=(0.229, 0.224, 0.225), metadata={"range": (1e-6, None)})
    p: float = field(default=1.0, metadata={"range": (1.0, 1.0), "help": "normalize always applies"})

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise FieldError("std", f"has {len(self.std)} values but mean has {len(self.mean)}.")


@register
class Normalize(Op):
    """(x - mean) / std per channel. Must be the last op of a view."""
    name = "normalize"
    Params = NormalizeParams

    def __init__(self, params):
        super().__init__(params)
        self._stats: dict = {}

    def draw(self, x, gen):
        return None, {}  # nothing random

    def stats(self, x):
        """(mean, std) as (C,) tensors on x's device, built once per device: a pageable host->device
        copy would sync CUDA."""
        channels = x.shape[1]
        mean, std = self.params.mean, self.params.std
        if len(mean) not in (1, channels):
            raise ValueError(f"normalize: mean/std have {len(mean)} values but images have {channels} channels; "
                             f"give 1 or {channels} values.")
        key = (x.device, x.dtype, channels)
        if key not in self._stats:
            self._stats[key] = (torch.tensor(mean, dtype=x.dtype).expand(channels).contiguous().to(x.device),
                                torch.tensor(std, dtype=x.dtype).expand(channels).contiguous().to(x.device))
        return self._stats[key]

    def apply(self, x, draws, applied):
        return normalize(x, *self.stats(x))

    def apply_selected(self, x, draws, applied):
        """`apply` in place (the caller owns x): the same subtraction and division, no new tensor."""
        mean, std = self.stats(x)
        return x.contiguous().sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
