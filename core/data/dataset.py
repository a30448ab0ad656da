"""A torch Dataset of samples drawn from a cache, safe in DataLoader workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import DataError
from duoseg.core.interfaces.sampler import Sample, Sampler
from duoseg.core.interfaces.store import CacheReader
from torch.utils.data import Dataset


class SampleDataset(Dataset[dict[str, torch.Tensor | str]]):
    """``length`` samples per epoch; sample ``index`` comes from a case chosen by
    ``(seed, epoch, index)``, so any worker, or a resumed run, draws the same one.

    The cache is opened lazily in each process: file handles never cross a fork.
    """

    def __init__(
        self,
        cache: str | Path,
        sampler: Sampler,
        *,
        length: int,
        cases: Sequence[str] | None = None,
        epoch: int = 0,
    ) -> None:
        if length < 1:
            raise DataError(f"length must be >= 1, got {length}")
        self.path = Path(cache)
        self.sampler = sampler
        self.length = length
        self.epoch = epoch
        self._reader: CacheReader | None = None
        self._pid = -1
        self.cases = list(cases) if cases is not None else self.reader.cases()
        if not self.cases:
            raise DataError(f"{self.path}: no cases to sample from")
        unknown = sorted(set(self.cases) - set(self.reader.cases()))
        if unknown:
            raise DataError(f"{self.path}: cases {unknown[:5]} are not in the cache")

    @property
    def reader(self) -> CacheReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = open_cache(self.path)
            self._pid = os.getpid()
        return self._reader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int) -> Sample:
        rng = np.random.default_rng([self.sampler.seed, self.epoch, index, 2])
        case_id = self.cases[int(rng.integers(len(self.cases)))]
        return self.sampler.sample(self.reader.case(case_id), epoch=self.epoch, index=index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        sample = self.draw(index)
        return {
            "image": torch.from_numpy(sample.image),
            "label": torch.from_numpy(sample.label),
            "case_id": sample.case_id,
            "origin": torch.tensor(sample.origin),
        }
