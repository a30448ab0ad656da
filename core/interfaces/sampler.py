"""The sampler interface: training samples drawn from one cache case, reproducibly.

A sample is a pure function of ``(seed, epoch, index)``: a resumed run or another
DataLoader worker draws exactly the same one. Samplers read only the voxels they
return (plus, for class-balanced sampling, one label chunk).

Patches that reach past the volume are padded: the image with -1 (the bottom of the
normalised range, i.e. air) and the label with 0 (background).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from duoseg.core.errors import DataError
from duoseg.core.interfaces.store import CacheCase, ChunkedArray
from duoseg.core.records.case import CaseMeta
from numpy.typing import NDArray

IMAGE_PAD = -1.0
LABEL_PAD = 0

Coords = Sequence[int] | NDArray[np.integer[Any]]
"""A (z, y, x) grid index or size: ints, or the integer array numpy arithmetic gives."""


@dataclass(frozen=True)
class Sample:
    """Image (1, z, y, x) float32, label (z', y, x) int64, and where they came from.

    ``origin`` is the grid index of the sample's first voxel in the case (negative
    where the sample starts in the padding) on the grid it was drawn from; ``level``
    names that grid: ``"full"`` or a cache level (``"coarse"``, ``"baseline"``, ...).
    """

    image: NDArray[np.float32]
    label: NDArray[np.int64]
    case_id: str
    origin: tuple[int, int, int]
    level: str


def overlap(
    origin: Coords, size: Coords, shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where a box at ``origin`` of ``size`` meets an array of ``shape``: (in the array,
    in the box), or None when they do not meet."""
    inside, box = [], []
    for o, s, n in zip(origin, size, shape, strict=True):
        low, high = max(o, 0), min(o + s, n)
        if high <= low:
            return None
        inside.append(slice(low, high))
        box.append(slice(low - o, high - o))
    return tuple(inside), tuple(box)


def read_padded(array: ChunkedArray, origin: Coords, size: Coords, fill: float) -> NDArray[Any]:
    """Read the box at ``origin`` of ``size``, padding with ``fill`` where it leaves the array."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    where = overlap(origin, size, array.shape)
    if where is not None:
        out[where[1]] = array.read(where[0])
    return out


class Sampler(ABC):
    """Draws samples from cache cases; subclasses fill :meth:`_sample`.

    Args:
        seed: the run's seed; with ``epoch`` and ``index`` it fixes every draw.
        batch_size: samples per batch, for samplers whose size varies per batch.

    ``level``, when a method sets it (``Method.adapt_sampler``), asks for samples drawn
    from that cache level instead of the full-resolution arrays (a resampled
    baseline's own grid); samplers that can do so set ``reads_levels``, the others
    refuse it.
    """

    needs_label = True
    reads_levels = False

    def __init__(self, *, seed: int = 0, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.seed = seed
        self.batch_size = batch_size
        self.level: str | None = None

    def sample_shape(self, meta: CaseMeta) -> tuple[int, ...] | None:
        """The image shape drawn from a case of ``meta`` where the case fixes it (whole
        volumes, whole slices); None where only the batch's draws do (patch sizes)."""
        return None

    def sample(self, case: CacheCase, *, epoch: int, index: int) -> Sample:
        """Draw sample ``index`` of ``epoch`` from ``case``."""
        name = type(self).__name__
        if self.needs_label and case.label is None:
            raise DataError(f"{name}: case {case.case_id} has no label")
        if self.level is not None and not self.reads_levels:
            raise DataError(f"{name} cannot draw its samples from level {self.level!r}")
        rng = np.random.default_rng([self.seed, epoch, index, 0])
        batch_rng = np.random.default_rng([self.seed, epoch, index // self.batch_size, 1])
        return self._sample(case, rng, batch_rng)

    @abstractmethod
    def _sample(
        self, case: CacheCase, rng: np.random.Generator, batch_rng: np.random.Generator
    ) -> Sample:
        """Draw one sample; ``batch_rng`` is shared by every sample of the batch."""


def as_sample(
    case: CacheCase, image: NDArray[Any], label: NDArray[Any], origin: Coords, level: str
) -> Sample:
    return Sample(
        image=image.astype(np.float32)[None],
        label=label.astype(np.int64),
        case_id=case.case_id,
        origin=(int(origin[0]), int(origin[1]), int(origin[2])),
        level=level,
    )
