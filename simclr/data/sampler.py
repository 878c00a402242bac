"""The batch order of every loader: a seeded, rank-aware batch sampler (in memory and streamed alike)."""
from __future__ import annotations

import torch


class SeededBatchSampler(torch.utils.data.Sampler):
    """Shuffled index batches from (seed, epoch) alone, so a resumed run replays the same order.

    Rank-aware: each of `world` ranks takes a disjoint strided share of every global permutation.
    `resume_at(epoch, k)`: passes over that epoch begin at batch k (a run resumed mid-epoch; indices
    skipped, nothing loaded). Lightning may start more than one pass per epoch, so it holds for the epoch.
    """

    _resume: tuple[int, int] = (-1, 0)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self.epoch, self._resume = epoch, (epoch, batches_done)

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle, self.drop_last = n, batch_size, seed, shuffle, drop_last
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(self.n)
        else:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        # training (drop_last): every rank the same number of images, so the same number of batches. With
        # one more batch on some rank, its all_gather would wait for ranks that have finished the epoch.
        usable = self.n - self.n % self.world if self.drop_last else self.n
        return order[:usable][self.rank::self.world]

    def __iter__(self):
        idx = self._indices()
        stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
        start = self._resume[1] if self._resume[0] == self.epoch else 0
        for i in range(start * self.batch_size, stop, self.batch_size):
            yield idx[i:i + self.batch_size]

    def __len__(self) -> int:
        per_rank = self.n // self.world if self.drop_last else len(range(self.rank, self.n, self.world))
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)
