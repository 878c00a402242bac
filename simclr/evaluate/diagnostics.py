"""Representation diagnostics: alignment/uniformity, RankMe, and the per-op invariance profile."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.augment import REGISTRY, eval_preprocess, single_op
from simclr.augment.policy import Policy
from simclr.data import ImageData
from simclr.evaluate.features import frozen
from simclr.utils import to_unit_float


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (2020): E ||f(x) - f(x+)||^alpha over positive pairs, unit-normalised features."""
    z1, z2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola (2020): log E exp(-t ||f(x) - f(y)||^2) over distinct pairs."""
    z = F.normalize(z.double(), dim=1)
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(len(sq)), dtype=torch.float64)))


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Garrido et al. (2023): exp(entropy of the normalised singular values) of the (N, D) embeddings."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


@torch.inference_mode()
def _features(encoder, x_float01, pre) -> torch.Tensor:
    return encoder(pre(x_float01)).float()


def invariance_profile(encoder: torch.nn.Module, images: ImageData, policy: Policy, seed: int = 0,
                       batch_size: int = 256) -> dict[str, float]:
    """For each registered op (default params, p=1): mean cosine(f(x) - m, f(op(x)) - m) over `images`,
    m = the mean clean feature of the sample.

    Centring matters: post-ReLU, average-pooled features share a large common offset, which makes raw
    cosines ~0.9+ for any encoder. 1.0 means the encoder ignores that transformation entirely; 0 means
    op(x) lands no closer to x than to a typical other image. The same images and seed are used for
    every op, so profiles of two runs are directly comparable.
    """
    pre = eval_preprocess(policy)
    device = next(encoder.parameters()).device
    out = {}
    with frozen(encoder):
        clean = torch.cat([_features(encoder, to_unit_float(images.images[s:s + batch_size].to(device)), pre)
                           for s in range(0, len(images), batch_size)])
        centre = clean.mean(dim=0, keepdim=True)
        for name in sorted(REGISTRY):
            if name == "normalize":
                continue
            moved = torch.cat([_features(encoder, single_op(name, images.images[s:s + batch_size].to(device),
                                                            seed=seed + s), pre)
                               for s in range(0, len(images), batch_size)])
            out[name] = float(F.cosine_similarity(clean - centre, moved - centre, dim=1).mean())
    return out


def positive_pair_features(encoder, images: ImageData, policy: Policy, seed: int = 0, batch_size: int = 256):
    """Features of the policy's two views of each image (for alignment)."""
    from simclr.augment import TwoViewAugmenter
    aug = TwoViewAugmenter(policy, seed=seed)
    device = next(encoder.parameters()).device
    z1, z2 = [], []
    with frozen(encoder):
        for start in range(0, len(images), batch_size):
            v1, v2 = aug(images.images[start:start + batch_size].to(device))
            z1.append(encoder(v1).float().cpu())
            z2.append(encoder(v2).float().cpu())
    return torch.cat(z1), torch.cat(z2)
