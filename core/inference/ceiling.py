"""The ceiling of an N mm path: the ground truth itself taken to N mm and back.

A model that predicts on an N mm grid and brings its class probabilities back to the
original grid (the paper's 2 mm baseline, the ``resampled`` method) can do no better
than the perfect N mm prediction: each class's share of every N mm voxel (area
averaging), upsampled with the same quadratic B-splines the method uses, argmax. How
far that falls below 1 is what a data set's detail finer than N mm costs such a model;
a ceiling near 1 means the data cannot show what full resolution is for.
"""

from __future__ import annotations

import numpy as np
import torch
from duoseg.core.data.grid import area_downsample, grid_shape
from duoseg.core.inference.resample import BSplineUpsampler
from duoseg.core.inference.streaming import most_probable
from numpy.typing import NDArray

SLAB = 16  # full-resolution slices upsampled at a time: memory stays a few slices deep


def coarse_fractions(
    label: NDArray[np.integer], spacing: tuple[float, ...], target_mm: float, classes: int
) -> NDArray[np.float32]:
    """(classes, z', y', x'): each class's share of every ``target_mm`` voxel, one class at
    a time (a one-hot of the whole volume would be ``classes`` float volumes)."""
    shape = grid_shape(label.shape, spacing, target_mm)
    source = torch.from_numpy(np.ascontiguousarray(label))
    return np.stack([area_downsample((source == c).float()[None, None], shape)[0, 0].numpy()
                     for c in range(classes)])  # fmt: skip


def round_trip(
    label: NDArray[np.integer], spacing: tuple[float, ...], target_mm: float, classes: int
) -> NDArray[np.uint8]:
    """``label`` (class indices 0..classes-1) to ``target_mm`` and back: the argmax of the
    quadratic B-spline upsampled class shares."""
    if target_mm <= 0 or not np.isfinite(target_mm):
        raise ValueError(f"the ceiling's grid must be a positive spacing in mm, got {target_mm}")
    shape = (int(label.shape[0]), int(label.shape[1]), int(label.shape[2]))
    upsampler = BSplineUpsampler(coarse_fractions(label, spacing, target_mm, classes), shape)
    out = np.empty(shape, np.uint8)
    for z0 in range(0, shape[0], SLAB):
        z1 = min(z0 + SLAB, shape[0])
        out[z0:z1] = most_probable(upsampler.slab(z0, z1)).numpy()
    return out
