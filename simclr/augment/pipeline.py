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

CHUNK_BYTES = 256 << 20  # CPU chunk of float pixels. On 2 cores (scripts/bench_augment_chunks.py, docs/benchmarks.md)
# chunks of 32-256 MiB beat cache-sized 8 MiB ones by 1.2-1.5x at 96 and 224 px: the per-op call overhead of many
# small chunks outweighed the cache they saved. It still bounds the working set of very large batches.


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

    def __init__(self, policy: Policy, seed: int = 0, rank: int = 0, compile: bool = False,
                 chunk_bytes: int = CHUNK_BYTES):
        super().__init__()
        self.policy = policy
        self.seed = seed
        self.compiled = compile
        self.chunk_bytes = chunk_bytes  # CPU: images per chunk ~ this many bytes of float pixels; 0: whole batch
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
        if x_uint8.device.type == "cpu" and not self.compiled and self.chunk_bytes:
            return self._forward_in_chunks(x_uint8)
        x = self.shared_view(x_uint8)  # computed once for both views: ops never modify their input in place
        v1, v2 = self.view(x_uint8, 0, _float=x), self.view(x_uint8, 1, _float=x)
        self._check_same_shape(v1.shape, v2.shape)
        return v1, v2

    def _check_same_shape(self, a, b) -> None:
        if tuple(a) != tuple(b):
            raise ValueError(f"policy '{self.policy.name}' makes views of different shapes {tuple(a)} "
                             f"and {tuple(b)}; give both crops the same size.")

    def _forward_in_chunks(self, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU: `forward`'s result (same draws, same per-op results), computed a few images at a time.

        All draws are made first, for the whole batch (each op has its own stream, so drawing ahead
        changes nothing), then each chunk of ~`chunk_bytes` of float pixels (by default the whole batch)
        goes through the shared ops and both views, with each probabilistic op computed only for the
        images it selects (`Op.apply_selected`).
        """
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ValueError(f"augmenter expects uint8 images (B, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        gens = self.generators(x_uint8.device)
        shared, shape = draw_all(self.shared, gens[2], tuple(x_uint8.shape))
        (draws0, shape0), (draws1, shape1) = (draw_all(self.views[v], gens[v], shape) for v in (0, 1))
        self._check_same_shape(shape0, shape1)
        outs = (torch.empty(shape0, dtype=torch.float32), torch.empty(shape1, dtype=torch.float32))
        side = max(shape[-2] * shape[-1], shape0[-2] * shape0[-1], x_uint8.shape[-2] * x_uint8.shape[-1])
        step = max(1, self.chunk_bytes // (4 * shape[1] * side))
        for start in range(0, x_uint8.shape[0], step):
            rows = slice(start, start + step)
            x = run_ops(self.shared, shared, rows, to_unit_float(x_uint8[rows]))
            # view 0 gets a copy (apply_selected may write into its input, and view 1 starts from x too)
            # unless its first op makes a new tensor anyway
            first_fresh = bool(self.views[0]) and self.views[0][0].fresh_output
            outs[0][rows] = run_ops(self.views[0], draws0, rows, x if first_fresh else x.clone())
            outs[1][rows] = run_ops(self.views[1], draws1, rows, x)
        return outs

    # Generator states are checkpointed with the module (Lightning saves state_dict()).
    def get_extra_state(self):
        if self._gens:
            (gens,) = self._gens.values()
            return {"seed": self.seed, "rank": self.rank, "states": [[g.get_state() for g in row] for row in gens]}
        return {"seed": self.seed, "rank": self.rank, "states": self._loaded_states}

    def set_extra_state(self, state) -> None:
        self.seed = state["seed"]
        per_rank = state.get("per_rank")  # every rank's streams (checkpoints written since multi-device resume)
        if isinstance(per_rank, list) and self.rank < len(per_rank):
            self._loaded_states = per_rank[self.rank]
        else:  # rank 0's streams only: other ranks restart their own from the seed (distinct, not continued)
            self._loaded_states = state["states"] if state["rank"] == self.rank else None
        self._gens = {}

    def extra_repr(self) -> str:
        return f"policy={self.policy.name}, seed={self.seed}, views={self.views}"


def draw_all(ops: list[Op], gens: list[torch.Generator], shape: tuple[int, ...]):
    """Every op's (applied, draws) for a batch of `shape`, and the shape after the ops. Ops draw
    from shape, dtype and device only, so a zero-stride stand-in replaces the images."""
    draws = []
    for op, gen in zip(ops, gens, strict=True):
        draws.append(op.draw(torch.empty((), dtype=torch.float32).expand(shape), gen))  # to_unit_float dtype
        shape = op.out_shape(shape)
    return draws, shape


def run_ops(ops: list[Op], draws, rows: slice, x: torch.Tensor) -> torch.Tensor:
    """The ops' pixel work on images `rows` of the batch that `draws` were made for; may write into x.
    A horizontal flip right after a crop is folded into the crop's sampling grid (the same pixels)."""
    i = 0
    while i < len(ops):
        op, (applied, d) = ops[i], draws[i]
        d = {k: v[rows] for k, v in d.items()}
        applied = None if applied is None else applied[rows]
        if i + 1 < len(ops) and ops[i + 1].name == "horizontal_flip" and op.can_take_flip():
            x = op.apply_selected(x, d, applied, mirror=draws[i + 1][0][rows])
            i += 2
            continue
        x = op.apply_selected(x, d, applied)
        i += 1
    return x


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
