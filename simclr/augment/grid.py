"""`simclr policy show`: a PNG grid of real images and K augmented views under a policy."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from simclr.augment.pipeline import TwoViewAugmenter
from simclr.augment.policy import Policy
from simclr.utils import pyplot, to_unit_float


def policy_grid(policy: Policy, images: torch.Tensor, out: Path, views: int = 6, seed: int = 0) -> Path:
    """images: uint8 (N, C, H, W). Rows: images; columns: original, then `views` samples
    (alternating the policy's view 1 and view 2, each pair from one draw of the shared ops), before
    normalisation."""
    plt = pyplot()

    aug = TwoViewAugmenter(policy, seed=seed)
    cols = [to_unit_float(images)]
    for k in range(views):
        if k % 2 == 0:  # a pair of views starts from one draw of the shared ops, as in training
            shared = aug.shared_view(images)
        cols.append(aug.view(images, k % 2, normalize=False, _float=shared))
    n = len(images)
    fig, axes = plt.subplots(n, views + 1, figsize=(1.2 * (views + 1), 1.2 * n + 0.9), squeeze=False)
    for c, batch in enumerate(cols):
        for r in range(n):
            img = batch[r].clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[r][c]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"view {(c - 1) % 2 + 1}", fontsize=8)
    ops = " → ".join(o.name for o in policy.views[0])
    if policy.shared or policy.views[0] != policy.views[1]:
        ops = (f"shared: {' → '.join(o.name for o in policy.shared) or '-'}; "
               + "; ".join(f"view {i + 1}: {' → '.join(o.name for o in v)}" for i, v in enumerate(policy.views)))
    title = f"policy: {policy.name}\n" + "\n".join(textwrap.wrap(f"{policy.description} ({ops})" if policy.description
                                                                  else ops, 90))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
