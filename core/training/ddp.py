"""Data-parallel training (torchrun): each rank's share of a stage's samples, and the
gradients all ranks average before every optimiser step. A plain process is rank 0 of 1
and skips both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.distributed as dist
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.interfaces.network import SegmentationNetwork
from torch.utils.data import Dataset


class RankShard(Dataset[dict[str, Any]]):
    """The samples of one stage from ``start`` that rank ``rank`` of ``world`` draws;
    index i is the rank's i-th sample."""

    def __init__(
        self, samples: SampleDataset, *, start: int, count: int, world: int, rank: int, batch: int
    ) -> None:
        self.samples, self.start, self.count = samples, start, count
        self.world, self.rank, self.batch = world, rank, batch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, offset: int) -> dict[str, Any]:
        step, item = divmod(self.start + offset, self.batch)
        # Rank r of w draws samples r*b .. r*b+b-1 of each global batch of w*b.
        index = (step * self.world + self.rank) * self.batch + item
        return self.samples[index]


def average_gradients(networks: Iterable[SegmentationNetwork], world: int) -> None:
    """Replace each trained parameter's gradient by its mean over the ranks."""
    if world == 1 or not dist.is_initialized():
        return
    for network in networks:
        for param in network.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world
