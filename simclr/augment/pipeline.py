"""Two-view sampling on the model's device, with one seeded random stream per op.

Each op instance draws from its own `torch.Generator`, keyed by (seed, rank, view, op name,
occurrence of that name in the view). Removing op k from a policy therefore leaves every other
op's draws unchanged: two ablation arms that share the crop see identical crops. A policy's `shared`
ops (keys `shared/<op>#n`) are drawn once per image and applied before both views.
"""
from __future__ import annotations

import hashlib

import torch

from simclr.augment.policy import Policy, crop_size
from simclr.augment.registry import REGISTRY, Op
from simclr.utils import to_unit_float


def stream_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stream_keys(policy: Policy, rank: int = 0) -> list[list[str]]:
    """Rows: view 0, view 1, then the shared ops (an empty row when the policy has none)."""
    keys = []
    for v, view in enumerate((*policy.views, policy.shared)):
        count: dict[str, int] = {}
        row = []
        for op in view:
            count[op.name] = count.get(op.name, 0) + 1
            prefix = f"rank{rank}/" if rank else ""  # rank 0 keeps the single-device streams
            row.append(f"{prefix}{'shared' if v == 2 else f'view{v}'}/{op.name}#{count[op.name]}")
        keys.append(row)
    return keys


class TwoViewAugmenter(torch.nn.Module):
    """uint8 (B, C, H, W) on any device -> two float, normalised views on that same device.

    Deterministic given `seed`; generator states travel in `state_dict()` (as extra state), so a
    resumed run continues the exact random streams.
    """

    def __init__(self, policy: Policy, seed: int = 0, rank: int = 0, compile: bool = False):
        super().__init__()
        self.policy = policy
        self.seed = seed
        self.views: list[list[Op]] = [[REGISTRY[o.name](o.params) for o in view] for view in policy.views]
        self.shared: list[Op] = [REGISTRY[o.name](o.params) for o in policy.shared]
        if compile:  # fuses each op's pixel work; draws stay eager, so results and streams are unchanged
            for op in (op for view in (*self.views, self.shared) for op in view):
                op.compile_pixel_work()
        self.set_rank(rank)

    def set_rank(self, rank: int) -> None:
        """Each DDP rank must see different randomness; call before the first batch."""
        self.rank = rank
        self.keys = stream_keys(self.policy, rank)
        self._gens: dict[str, list[list[torch.Generator]]] = {}
        self._loaded_states: list[list[torch.Tensor]] | None = None

    def generators(self, device: torch.device) -> list[list[torch.Generator]]:
        dev = str(device)
        if dev not in self._gens:
            gens = []
            for v, row in enumerate(self.keys):
                gens.append([])
                for i, key in enumerate(row):
                    g = torch.Generator(device=device)
                    if self._loaded_states is not None:
                        g.set_state(self._loaded_states[v][i])
                    else:
                        g.manual_seed(stream_seed(self.seed, key))
                    gens[-1].append(g)
            self._gens = {dev: gens}  # one device at a time: moving devices continues from saved state
        return self._gens[dev]

    def shared_view(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """The policy's shared ops (one draw per image, for both views) on [0, 1] floats; the input
        converted to floats if the policy has none."""
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ValueError(f"augmenter expects uint8 images (B, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        x = to_unit_float(x_uint8)
        for op, gen in zip(self.shared, self.generators(x.device)[2], strict=True):
            x = op(x, gen)
        return x

    def view(self, x_uint8: torch.Tensor, index: int, normalize: bool = True,
             _float: torch.Tensor | None = None) -> torch.Tensor:
        """One view. `normalize=False` stops before normalize (for looking at the images).
        `_float`: the shared part (`shared_view`) to start from; without it the shared ops draw anew."""
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ValueError(f"augmenter expects uint8 images (B, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        x = _float if _float is not None else self.shared_view(x_uint8)
        for op, gen in zip(self.views[index], self.generators(x.device)[index], strict=True):
            if normalize or op.name != "normalize":
                x = op(x, gen)
        return x

    def forward(self, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.shared_view(x_uint8)  # computed once for both views: ops never modify their input in place
        v1, v2 = self.view(x_uint8, 0, _float=x), self.view(x_uint8, 1, _float=x)
        if v1.shape != v2.shape:
            raise ValueError(f"policy '{self.policy.name}' makes views of different shapes {tuple(v1.shape)} "
                             f"and {tuple(v2.shape)}; give both crops the same size.")
        return v1, v2

    # Generator states are checkpointed with the module (Lightning saves state_dict()).
    def get_extra_state(self):
        if self._gens:
            (gens,) = self._gens.values()
            return {"seed": self.seed, "rank": self.rank, "states": [[g.get_state() for g in row] for row in gens]}
        return {"seed": self.seed, "rank": self.rank, "states": self._loaded_states}

    def set_extra_state(self, state) -> None:
        self.seed = state["seed"]
        # A checkpoint holds rank 0's streams; other DDP ranks restart their own from the seed
        # (distinct from rank 0's, though not a continuation).
        self._loaded_states = state["states"] if state["rank"] == self.rank else None
        self._gens = {}

    def extra_repr(self) -> str:
        return f"policy={self.policy.name}, seed={self.seed}, views={self.views}"


def eval_preprocess(policy: Policy):
    """The deterministic input transform for evaluation: uint8 -> [0, 1] -> resize to the policy's
    crop size (if it has one) -> the policy's normalize. No randomness."""
    from kornia.geometry.transform import resize

    view = policy.views[0]
    size = crop_size(policy.shared + view)
    norm = [REGISTRY[o.name](o.params) for o in view if o.name == "normalize"]

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W), or float already in [0, 1] -> model input."""
        x = to_unit_float(x)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = resize(x, (size, size), interpolation="bilinear", antialias=True)
        for op in norm:
            x = op(x, None)
        return x

    return preprocess


def single_op(name: str, x_uint8: torch.Tensor, seed: int = 0, **params) -> torch.Tensor:
    """Apply one registered op (default params, p=1 unless given) to every image; float [0, 1] out.
    Used by the invariance profile: what does the encoder do under just this transformation?"""
    from simclr.config.schema import build

    op_cls = REGISTRY[name]
    op = op_cls(build(op_cls.Params, {"p": 1.0, **params}, name))
    gen = torch.Generator(device=x_uint8.device).manual_seed(stream_seed(seed, f"single/{name}"))
    return op(to_unit_float(x_uint8), gen)
