"""Representation diagnostics: alignment/uniformity, RankMe, and the per-op invariance profile."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simclr.augment import REGISTRY, eval_preprocess, single_op
from simclr.augment.policy import Policy
from simclr.config.schema import to_dict
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


DIAGNOSTIC_SEEDS = (0, 1, 2)


def balanced_sample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of about n items, an equal share per class (as many as a class has, if fewer), drawn with a
    seeded generator and returned sorted. Unlabelled items (label < 0) are never drawn."""
    labels = torch.as_tensor(labels)
    classes = labels[labels >= 0].unique()
    g = torch.Generator().manual_seed(seed)
    per_class = max(1, n // max(1, len(classes)))
    picked = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picked).sort().values if picked else torch.empty(0, dtype=torch.long)


@torch.inference_mode()
def _features(encoder, x_float01, pre) -> torch.Tensor:
    return encoder(pre(x_float01)).float()


def policy_params(policy: Policy) -> dict[str, dict]:
    """op name -> the policy's parameters for it (its first occurrence: shared, then view 1, then view 2)."""
    out: dict[str, dict] = {}
    for view in (policy.shared, *policy.views):
        for op in view:
            out.setdefault(op.name, to_dict(op.params))
    return out


def invariance_profile(encoder: torch.nn.Module, images: ImageData, policy: Policy, seed: int = 0,
                       batch_size: int = 256, seeds: tuple[int, ...] = DIAGNOSTIC_SEEDS) -> dict[str, dict]:
    """For each registered op, at the policy's own parameters (registry defaults for ops the policy
    lacks), always applied (p=1), over `len(seeds)` draws of the op:

    * cosine: mean cos(f(x) - m, f(op(x)) - m), m = the mean clean feature of the sample. Centring
      matters: post-ReLU, average-pooled features share a large common offset, which makes raw cosines
      ~0.9+ for any encoder. 1.0 = the encoder ignores the op; 0 = op(x) lands no closer to x than to a
      typical other image.
    * retrieval: the scale reference — how often f(op(x))'s nearest clean feature (cosine) in the
      sample is f(x) itself; chance is 1/len(images).

    Each entry has the mean and the std over the draws, the parameters used and whether the policy has
    the op. The same images and seeds are used for every op, so profiles of two runs are comparable.
    """
    pre = eval_preprocess(policy)
    own = policy_params(policy)
    device = next(encoder.parameters()).device
    out = {}
    with frozen(encoder):
        clean = torch.cat([_features(encoder, to_unit_float(images.images[s:s + batch_size].to(device)), pre)
                           for s in range(0, len(images), batch_size)])
        centre = clean.mean(dim=0, keepdim=True)
        unit_clean = F.normalize(clean - centre, dim=1)
        for name in sorted(REGISTRY):
            if name == "normalize":
                continue
            params = {k: v for k, v in own.get(name, {}).items() if k != "p"}
            cosines, hits = [], []
            for draw in seeds:
                moved = torch.cat([_features(encoder, single_op(name, images.images[s:s + batch_size].to(device),
                                                                seed=seed + 1000 * draw + s, **params), pre)
                                   for s in range(0, len(images), batch_size)])
                unit_moved = F.normalize(moved - centre, dim=1)
                cosines.append(float((unit_clean * unit_moved).sum(1).mean()))
                nearest = (unit_moved @ unit_clean.T).argmax(dim=1)
                hits.append(float((nearest == torch.arange(len(images), device=nearest.device)).float().mean()))
            c, h = torch.tensor(cosines, dtype=torch.float64), torch.tensor(hits, dtype=torch.float64)
            out[name] = {"cosine": float(c.mean()), "cosine_std": float(c.std()) if len(c) > 1 else 0.0,
                         "retrieval": float(h.mean()), "retrieval_std": float(h.std()) if len(h) > 1 else 0.0,
                         "draws": len(seeds), "in_policy": name in own, "params": {**params, "p": 1.0}}
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
