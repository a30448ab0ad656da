"""Samplers: class-balanced patches (the paper's), whole coarse volumes, axial stacks, uniform."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from duoseg.core import Component, hookimpl
from duoseg.core.errors import ConfigError, DataError
from duoseg.core.interfaces.sampler import (
    IMAGE_PAD,
    LABEL_PAD,
    Sample,
    Sampler,
    as_sample,
    read_padded,
)
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.records.case import CaseMeta
from numpy.typing import NDArray


def pick_class(case: CacheCase, rng: np.random.Generator, weights: Sequence[float] | None) -> int:
    """A class among those present in the case: uniformly, or by ``weights`` per class index."""
    totals = case.class_counts.reshape(-1, case.class_counts.shape[-1]).sum(0)
    present = np.flatnonzero(totals)
    if present.size == 0:
        raise DataError(f"case {case.case_id}: its label holds no voxel of any class")
    if weights is None:
        return int(rng.choice(present))
    if len(weights) != totals.size:
        raise DataError(
            f"class weights need {totals.size} values (one per class), got {len(weights)}"
        )
    p = np.asarray(weights, dtype=np.float64)[present]
    if p.sum() <= 0:
        raise DataError(f"case {case.case_id}: class weights {list(weights)} give no present class")
    return int(rng.choice(present, p=p / p.sum()))


def pick_voxel(case: CacheCase, cls: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """A voxel of class ``cls``, uniform over all its voxels: a block by count, then one chunk."""
    assert case.label is not None  # checked by Sampler.sample
    counts = case.class_counts[..., cls]
    flat = int(rng.choice(counts.size, p=counts.ravel() / counts.sum()))
    block = np.unravel_index(flat, counts.shape)
    region = case.label.chunk_region(tuple(int(b) for b in block))
    hits = np.argwhere(case.label.read(region) == cls)
    if len(hits) != counts[block]:
        raise DataError(
            f"{case.label.where}: class index says {counts[block]} voxels of class {cls} in "
            f"block {tuple(map(int, block))}, the chunk holds {len(hits)}; rebuild the cache"
        )
    voxel = hits[int(rng.integers(len(hits)))]
    centre: NDArray[np.int64] = np.asarray([r.start for r in region]) + voxel
    return centre


class PatchSampler(Sampler):
    """Cubic patches whose edge is drawn per batch from ``sizes``.

    Edges count full-resolution voxels; when the trainer sets ``level`` (a resampled
    baseline's working grid, say the 2 mm ``baseline`` level), they count voxels of
    that cache level, and the patch is read from the level's image and label around
    the level voxel holding the centre drawn at full resolution: a 64-voxel patch at
    2 mm reads 64^3 voxels, not the ~280 x 280 x 200 full-resolution ones it covers.
    """

    reads_levels = True

    def __init__(
        self,
        *,
        sizes: Sequence[int] = (64, 128, 256),
        allow_padding: bool = True,
        seed: int = 0,
        batch_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if not sizes or min(sizes) < 1:
            raise DataError(f"patch sizes must be positive, got {list(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.allow_padding = allow_padding

    def _grid(self, case: CacheCase) -> tuple[int, int, int]:
        """The shape of the grid patches are cut from."""
        return case.meta.shape if self.level is None else case.meta.level(self.level).shape

    def _size(self, case: CacheCase, batch_rng: np.random.Generator) -> NDArray[np.int64]:
        """The edge drawn for this batch, as (z, y, x) sizes of the grid sampled on."""
        edge = int(batch_rng.choice(self.sizes))
        grid = self._grid(case)
        if not self.allow_padding and edge > min(grid):
            on = "" if self.level is None else f" level {self.level!r} of"
            raise DataError(
                f"patch size {edge} exceeds{on} case {case.case_id} of shape {grid} "
                "and allow_padding is false"
            )
        return np.full(3, edge)

    def _patch(self, case: CacheCase, centre: NDArray[np.int64], size: NDArray[np.int64]) -> Sample:
        """The patch of ``size`` around the full-resolution voxel ``centre``."""
        image, label, grid = case.image, case.label, np.asarray(case.meta.shape)
        if self.level is not None:
            level = case.level(self.level)
            image, label, full = level.image, level.label, grid
            grid = np.asarray(image.shape)
            centre = (2 * centre + 1) * grid // (2 * full)  # the level voxel holding it
        assert label is not None  # checked by Sampler.sample
        origin = centre - size // 2
        if not self.allow_padding:
            origin = np.clip(origin, 0, grid - size)
        return as_sample(
            case,
            read_padded(image, origin, size, IMAGE_PAD),
            read_padded(label, origin, size, LABEL_PAD),
            origin,
            self.level or "full",
        )


class ClassBalancedSampler(PatchSampler):
    """The paper's hierarchical sampling: a class uniformly, then a voxel of it as the centre.

    Every class present in the case is equally likely to be at the patch centre
    (1 / classes present), or in proportion to ``class_weights`` (one per class index).
    A share ``uniform_fraction`` of the patches is centred uniformly over the volume
    instead, so the network also sees the background far from any structure (what it
    must reject at prediction). Edges are drawn per batch from ``sizes`` (the paper:
    64, 128, 256).
    """

    def __init__(
        self,
        *,
        sizes: Sequence[int] = (64, 128, 256),
        class_weights: Sequence[float] | None = None,
        uniform_fraction: float = 0.0,
        allow_padding: bool = True,
        seed: int = 0,
        batch_size: int = 1,
    ) -> None:
        super().__init__(sizes=sizes, allow_padding=allow_padding, seed=seed, batch_size=batch_size)
        if not 0 <= uniform_fraction <= 1:
            raise ConfigError(f"uniform_fraction must lie in [0, 1], got {uniform_fraction}")
        self.class_weights = class_weights
        self.uniform_fraction = uniform_fraction

    def _sample(
        self, case: CacheCase, rng: np.random.Generator, batch_rng: np.random.Generator
    ) -> Sample:
        size = self._size(case, batch_rng)
        if self.uniform_fraction and rng.random() < self.uniform_fraction:
            centre = uniform_voxel(case, rng)
        else:
            centre = pick_voxel(case, pick_class(case, rng, self.class_weights), rng)
        return self._patch(case, centre, size)


def uniform_voxel(case: CacheCase, rng: np.random.Generator) -> NDArray[np.int64]:
    """A voxel uniform over the whole volume."""
    return np.asarray([int(rng.integers(n)) for n in case.meta.shape])


class UniformSampler(PatchSampler):
    """Patch centres uniform over the volume, for comparison with class balancing."""

    def _sample(
        self, case: CacheCase, rng: np.random.Generator, batch_rng: np.random.Generator
    ) -> Sample:
        return self._patch(case, uniform_voxel(case, rng), self._size(case, batch_rng))


class WholeCoarseSampler(Sampler):
    """One whole coarse volume (the schedule's step 1: Net1 on full volumes at 3 mm)."""

    def _sample(
        self, case: CacheCase, rng: np.random.Generator, batch_rng: np.random.Generator
    ) -> Sample:
        assert case.coarse_label is not None
        return as_sample(case, case.coarse_image[...], case.coarse_label[...], (0, 0, 0), "coarse")

    def sample_shape(self, meta: CaseMeta) -> tuple[int, ...] | None:
        return meta.coarse.shape


class AxialStackSampler(Sampler):
    """K consecutive full-resolution axial slices and the central slice's label (1, y, x).

    The central voxel is chosen class-balanced (a class, then a voxel of it) unless
    ``balanced`` is false (uniform over the volume); with ``uniform_fraction``, that
    share of the stacks is centred uniformly all the same, so Net2 also learns the
    background far from the heart. ``crop`` = (y, x) cuts an in-plane window around
    the chosen voxel instead of whole slices. Slices beyond the volume are padded.
    """

    def __init__(
        self,
        *,
        k: int = 9,
        balanced: bool = True,
        uniform_fraction: float = 0.0,
        crop: Sequence[int] | None = None,
        class_weights: Sequence[float] | None = None,
        seed: int = 0,
        batch_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if k < 1 or k % 2 == 0:
            raise DataError(f"axial_stack needs an odd number of slices k, got k={k}")
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise DataError(f"crop must be two positive sizes (y, x), got {list(crop)}")
        if not 0 <= uniform_fraction <= 1:
            raise ConfigError(f"uniform_fraction must lie in [0, 1], got {uniform_fraction}")
        self.k = k
        self.balanced = balanced
        self.uniform_fraction = uniform_fraction
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.class_weights = class_weights

    def sample_shape(self, meta: CaseMeta) -> tuple[int, ...] | None:
        return (self.k, *meta.shape[1:]) if self.crop is None else None

    def _sample(
        self, case: CacheCase, rng: np.random.Generator, batch_rng: np.random.Generator
    ) -> Sample:
        assert case.label is not None
        shape = np.asarray(case.meta.shape)
        uniform = not self.balanced or (
            self.uniform_fraction > 0 and rng.random() < self.uniform_fraction
        )
        if uniform:
            voxel = uniform_voxel(case, rng)
        else:
            voxel = pick_voxel(case, pick_class(case, rng, self.class_weights), rng)
        in_plane = shape[1:] if self.crop is None else np.asarray(self.crop)
        corner = np.zeros(2, np.int64) if self.crop is None else voxel[1:] - in_plane // 2
        origin = np.asarray([voxel[0] - self.k // 2, *corner])
        image = read_padded(case.image, origin, (self.k, *in_plane), IMAGE_PAD)
        label = read_padded(case.label, (voxel[0], *corner), (1, *in_plane), LABEL_PAD)
        return as_sample(case, image, label, origin, "full")


@hookimpl
def duoseg_sampler() -> list[Component]:
    return [
        Component("class_balanced", ClassBalancedSampler, "Paper's sampling: class, then voxel"),
        Component("uniform", UniformSampler, "Patch centres uniform over the volume"),
        Component("whole_coarse", WholeCoarseSampler, "One whole coarse (3 mm) volume"),
        Component("axial_stack", AxialStackSampler, "K full axial slices, central label"),
    ]
