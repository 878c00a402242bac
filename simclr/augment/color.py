"""Batched colour-jitter kernels with per-sample factors *and per-sample order*.

torchvision's ColorJitter applies brightness, contrast, saturation and hue in a random order per
image; Kornia's `ColorJitter` draws that order once per batch. Applying each of the four sub-ops at
each of the four positions would cost 4x (and hue, an RGB->HSV->RGB round trip, dominates).
Two facts make per-sample order cheap:

* brightness, contrast and saturation are all the same blend `clamp(f*x + (1-f)*ref, 0, 1)` with
  ref = 0, mean(gray(x)) and gray(x) respectively — exactly torchvision's `_blend` — so one fused
  "blend stage" applies, per sample, whichever of the three sits at that position (f=1 is an exact
  identity);
* hue appears exactly once in each order, so the pipeline is: up to three blend stages before
  hue, one hue shift, up to three blend stages after it.

`shift_hue` is a closed form of torchvision's HSV round trip: a hue shift keeps max and min of
(r, g, b), so each channel is max - (max-min) * clamp(min(k, 4-k), 0, 1) with k = (n + 6h) mod 6.
It matches `torchvision.transforms.v2.functional.adjust_hue` to ~1e-6 and is several times faster
than `kornia.enhance.adjust_hue` on CPU (see scripts/bench_augment.py).
"""
from __future__ import annotations

import torch

BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma; identity for one channel.

    torchvision's float weights (0.2989, 0.587, 0.114), not Kornia's 0.299: ColorJitter must match
    torchvision, and the 1e-4 difference is amplified by saturation factors far from 1.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)


def blend_stage(x: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Apply brightness/contrast/saturation, chosen per sample by `op` (B,), with `factor` (B,).

    Samples whose op is HUE are left exactly unchanged (their factor becomes 1).
    Per-sample choices are (B,1,1,1) float weights: on CPU a full-size `torch.where` costs ~30x a
    multiply, so selection is done by arithmetic on small tensors. The (1 - f) weight is folded into
    those small tensors, so the full-size work is one gray, one addcmul on it and one on x.
    """
    g = gray(x)                                                  # (B, 1, H, W)
    mean = g.mean(dim=(-3, -2, -1), keepdim=True)                # (B, 1, 1, 1)
    f = torch.where(op == HUE, torch.ones_like(factor), factor).to(x.dtype).view(-1, 1, 1, 1)
    keep = 1 - f
    is_c = (op == CONTRAST).to(x.dtype).view(-1, 1, 1, 1)
    is_s = (op == SATURATION).to(x.dtype).view(-1, 1, 1, 1)
    ref = torch.addcmul(is_c * mean * keep, g, is_s * keep)      # (1-f) * (0, mean or gray), per sample
    return torch.addcmul(ref, x, f).clamp_(0, 1)                 # torchvision's _blend


def shift_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate hue of RGB images x (B, 3, H, W) in [0, 1] by factor (B,) in [-0.5, 0.5] turns.

    Only arithmetic passes: on CPU a full-size comparison, `where` or `remainder` costs 3-15x a
    subtraction, so the branch "which channel is the max" is a 0/1 float weight from `sign` (max - c
    is >= 0) fed to `lerp`, which returns either end exactly.
    """
    r, g, b = x.unbind(dim=1)                                    # each (B, H, W)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    inv = chroma.clamp_min(1e-30).reciprocal_()                  # 0/0 -> 0, as torchvision's where(eqc, 1, cr)
    not_r, not_g = (maxc - r).sign_(), (maxc - g).sign_()        # 0 where that channel is the max, else 1
    # 6 * hue * chroma; torchvision: max in r -> bc-gc; elif in g -> 2+rc-bc; else 4+gc-rc
    num = torch.lerp(g - b, torch.lerp((b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0), not_g),
                     not_r)
    h6 = torch.addcmul((6.0 * factor).to(x.dtype).view(-1, 1, 1), num, inv)  # 6 * (hue + shift), not yet wrapped
    n = (5.0 - 2.0 * torch.arange(3, device=x.device, dtype=x.dtype)).view(1, 3, 1, 1)  # R, G, B: 5, 3, 1
    t = h6.unsqueeze(1) + n
    k = t.add_(torch.div(t, 6.0).floor_(), alpha=-6.0)           # (n + 6 * wrapped hue) mod 6, in one wrap
    w = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    # max - chroma * w lies in [min, max]: no clamp needed (both roundings stay inside)
    return torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), w, value=-1.0)


def jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, use_hue: bool) -> torch.Tensor:
    """Per-sample colour jitter.

    factors: (B, 4) brightness, contrast, saturation factors and hue shift.
    order:   (B, 4) a permutation of (0, 1, 2, 3) per sample — the order sub-ops are applied in.
    """
    rgb = x.shape[1] == 3
    if not rgb:  # torchvision: saturation and hue are no-ops on one-channel images
        factors = factors.clone()
        factors[:, SATURATION] = 1.0
    hue_pos = (order == HUE).to(torch.int64).argmax(dim=1)       # (B,)
    for t in range(3):  # stages before hue: position t holds a blend op iff t < hue_pos
        op = order[:, t]
        op = torch.where(t < hue_pos, op, torch.full_like(op, HUE))
        x = blend_stage(x, op, factors.gather(1, op.clamp(max=2).unsqueeze(1)).squeeze(1))
    if use_hue and rgb:
        x = shift_hue(x, factors[:, HUE])
    for t in range(3):  # stages after hue
        pos = hue_pos + 1 + t
        op = order.gather(1, pos.clamp(max=3).unsqueeze(1)).squeeze(1)
        op = torch.where(pos <= 3, op, torch.full_like(op, HUE))
        x = blend_stage(x, op, factors.gather(1, op.clamp(max=2).unsqueeze(1)).squeeze(1))
    return x


def jitter_selected(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, use_hue: bool,
                    applied: torch.Tensor) -> torch.Tensor:
    """`jitter` on the `applied` images of x, written into x (which the caller owns); for CPU.

    `jitter` runs six blend stages over every image because the hue position varies per image;
    here images are grouped by hue position, so each goes through its own three blend stages and
    one hue shift only. Grouping needs group sizes on the host (a sync on a GPU), hence CPU only.
    """
    if x.shape[1] != 3:
        return torch.lerp(x, jitter(x, factors, order, use_hue), applied.to(x.dtype).view(-1, 1, 1, 1))
    hue_pos = (order == HUE).to(torch.int64).argmax(dim=1)       # (B,)
    group = torch.where(applied, hue_pos, 4)                     # 4: not applied, left as it is
    x = x.contiguous()
    for j in range(4):
        idx = (group == j).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        blends = order.index_select(0, idx)[:, [t for t in range(4) if t != j]]  # (n, 3) the blend ops, in order
        f = factors.index_select(0, idx)
        fb = f.gather(1, blends).to(x.dtype)                     # their factors
        keep = 1 - fb
        mean_w, gray_w = (blends == CONTRAST).to(x.dtype) * keep, (blends == SATURATION).to(x.dtype) * keep
        y = x.index_select(0, idx)
        for t in range(4):
            if t == j:
                if use_hue:
                    y = shift_hue(y, f[:, HUE])
                continue
            s = t - (t > j)                                      # blend stage number
            g = gray(y)                                          # as blend_stage, weights made for all 3 stages
            ref = torch.addcmul(g.mean(dim=(-3, -2, -1), keepdim=True) * mean_w[:, s].view(-1, 1, 1, 1),
                                g, gray_w[:, s].view(-1, 1, 1, 1))
            y = torch.addcmul(ref, y, fb[:, s].view(-1, 1, 1, 1)).clamp_(0, 1)
        x.index_copy_(0, idx, y)
    return x
