"""Deterministic, resumable, sharded order in which training images are visited.

The whole run reads one endless stream of dataset indices: epoch ``e`` contributes a
permutation of ``range(n)`` drawn from a generator seeded with ``(seed, e)``. Every training
step consumes ``batch_per_gpu * num_processes`` consecutive stream items and process ``r``
takes its own slice of them, so processes never see the same image in a step and the order
does not depend on how many DataLoader workers prefetch ahead. A position in the stream is
one integer (items consumed), which is all a checkpoint needs to resume the exact order.

Items travel as ``(epoch, index)`` pairs and :class:`EpochItems` hands the epoch to the
dataset with each item, so epoch-dependent x-flips are right even inside persistent
DataLoader workers (which never see a ``set_epoch`` call made in the main process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset

_EPOCH_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs map to distinct generator seeds


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The visiting order of epoch ``epoch``: a permutation of ``range(n)``."""
    generator = torch.Generator().manual_seed(seed * _EPOCH_SEED_STRIDE + epoch)
    return torch.randperm(n, generator=generator)


@dataclass
class MinibatchOrder:
    """An endless ``batch_sampler`` for :class:`torch.utils.data.DataLoader`.

    Yields lists of ``batch_per_gpu`` ``(epoch, index)`` pairs for process ``rank`` of ``num_processes``,
    starting at stream position ``start`` (items consumed by all processes together).
    """

    num_items: int
    batch_per_gpu: int
    rank: int = 0
    num_processes: int = 1
    seed: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        if self.num_items <= 0:
            raise ValueError("MinibatchOrder needs a non-empty dataset")

    @property
    def step_items(self) -> int:
        """Stream items one training step consumes across all processes."""
        return self.batch_per_gpu * self.num_processes

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.start
        cached_epoch, perm = -1, None
        while True:
            first = position + self.rank * self.batch_per_gpu
            batch = []
            for item in range(first, first + self.batch_per_gpu):
                epoch, offset = divmod(item, self.num_items)
                if epoch != cached_epoch:  # one randperm per epoch, not per batch
                    cached_epoch, perm = epoch, epoch_permutation(self.num_items, self.seed, epoch)
                batch.append((epoch, int(perm[offset])))
            yield batch
            position += self.step_items


class EpochItems(Dataset):
    """Wraps a dataset with ``set_epoch`` so it can be indexed by ``(epoch, index)`` pairs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]
