"""The op registry: every augmentation is a name, a frozen params dataclass and two methods.

Why ops draw their own parameters instead of using Kornia's `RandomXxx` modules: Kornia samples
from the global torch RNG (even at p=0), so removing one op would shift every later op's draws
and two ablation arms would stop being comparable. Here each op instance owns a
`torch.Generator` (see pipeline.py) and draws a *fixed* number of values per batch from it, so an
op's randomness depends only on its own stream. Kornia still does the pixel work
(its functional kernels are batched and accept per-sample parameters).

Every op is applied per sample: a Bernoulli(p) mask picks which images get the op. On an
accelerator the op is computed for the whole batch and blended in (`apply`) — no boolean
indexing, which would force a host/device sync; on CPU only the selected images are computed
(`apply_selected`), with the same result.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from simclr.config.schema import FieldError

REGISTRY: dict[str, type["Op"]] = {}

PROBABILITY = {"range": (0.0, 1.0), "help": "chance that a given image gets this op"}


def register(cls: type["Op"]) -> type["Op"]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def check_interval(key: str, interval: tuple[float, float], lo: float | None = None, hi: float | None = None) -> None:
    """Cross-field check for a (min, max) pair, reported on `key`."""
    a, b = interval
    if a > b:
        raise FieldError(key, f"min {a} > max {b}; write [min, max].")
    if lo is not None and a < lo:
        raise FieldError(key, f"{a} is below the allowed minimum {lo}.")
    if hi is not None and b > hi:
        raise FieldError(key, f"{b} is above the allowed maximum {hi}.")


def uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


class Op:
    """Base class. Subclasses set `name`, `Params`, and implement `sample` and `transform`."""

    name: ClassVar[str]
    Params: ClassVar[type]
    fresh_output: ClassVar[bool] = False  # True: apply_selected never returns or writes into its input

    def __init__(self, params):
        self.params = params

    @property
    def p(self) -> float:
        return self.params.p

    def sample(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw per-sample parameters. Must draw the same amount whatever p is."""
        return {}

    def transform(self, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(which images get the op (B,), per-sample params). Uses only x's shape, dtype and device."""
        applied = torch.rand(x.shape[0], generator=gen, device=x.device) < self.p  # (B,)
        return applied, self.sample(x, gen)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of `shape` (only a crop changes it)."""
        return shape

    def can_take_flip(self) -> bool:
        """Whether a horizontal_flip right after this op can be folded into it, as
        `apply_selected(x, draws, applied, mirror=<the flip's selection>)` (see pipeline.run_ops)."""
        return False

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # x: (B, C, H, W) float in [0, 1] (normalize excepted)
        applied, draws = self.draw(x, gen)
        return self.apply(x, draws, applied)

    def apply(self, x: torch.Tensor, draws: dict[str, torch.Tensor], applied: torch.Tensor) -> torch.Tensor:
        """The pixel work, given the draws: no randomness here, so it can be torch.compile'd
        (`compile_pixel_work`) while sampling stays eager and the per-op streams stay the same."""
        out = self.transform(x, draws)
        # lerp with 0/1 weights is exact at both ends and, on CPU, ~15x cheaper than a full-size where
        return torch.lerp(x, out, applied.to(x.dtype).view(-1, 1, 1, 1))

    def apply_selected(self, x: torch.Tensor, draws: dict[str, torch.Tensor], applied: torch.Tensor) -> torch.Tensor:
        """`apply`'s result, with the pixel work done for the selected images only, written into `x`
        (which the caller must own). For CPU: picking the selected images needs their count on the
        host, which would sync a GPU, so `apply` computes every image and blends instead. Equal to
        `apply` because a 0/1 lerp returns exactly one of its ends."""
        idx = applied.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        if idx.numel() == x.shape[0]:
            return self.transform(x, draws)
        out = self.transform(x.index_select(0, idx), {k: v.index_select(0, idx) for k, v in draws.items()})
        return x.contiguous().index_copy_(0, idx, out)

    def compile_pixel_work(self) -> None:
        self.apply = torch.compile(self.apply, dynamic=False)

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in dataclasses.asdict(self.params).items())})"
