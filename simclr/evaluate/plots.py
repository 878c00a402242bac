"""PNG plots for evaluation reports."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simclr.utils import pyplot


def plot_invariance(profiles: dict[str, dict[str, float]], out: Path, title: str = "") -> Path:
    """Grouped bars: per op, mean cos(f(x), f(op(x))) for each encoder (1.0 = fully invariant)."""
    plt = pyplot()

    ops = sorted(next(iter(profiles.values())))
    width = 0.8 / len(profiles)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(ops)), 3.8))
    for i, (name, prof) in enumerate(profiles.items()):
        ax.bar(np.arange(len(ops)) + (i - (len(profiles) - 1) / 2) * width, [prof[o] for o in ops], width, label=name)
    ax.set_xticks(np.arange(len(ops)), ops, rotation=35, ha="right")
    ax.set_ylabel("centred cos(f(x), f(op(x)))")
    ax.set_ylim(min(0.0, min(min(p.values()) for p in profiles.values())), 1.02)
    ax.axhline(1.0, color="gray", lw=0.6, ls="--")
    ax.set_title(f"Invariance profile{': ' + title if title else ''}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
