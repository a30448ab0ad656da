"""Grids at other spacings: their shape, area downsampling onto them, and trilinear
upsampling of a coarse grid onto any full-resolution box.

Every coarse grid in duoseg (the cache's coarse level, a method's coarse or resampled
grid, a training patch seen at coarse spacing) goes through these functions, so
training, validation and inference see one and the same resampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from duoseg.core.interfaces.sampler import overlap
from numpy.typing import NDArray
from torch import Tensor


def grid_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: float
) -> tuple[int, int, int]:
    """The grid covering ``shape`` voxels of ``spacing`` mm with voxels of ``target`` mm."""
    z, y, x = (max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True))
    return (z, y, x)


def area_downsample(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Area (box) averaging of ``(b, c, z, y, x)`` to ``shape``: anti-aliased, as every
    coarse grid needs. Differentiable, on ``x``'s device."""
    z, y, w = shape
    return F.adaptive_avg_pool3d(x, (z, y, w))


def downsample_image(
    image: NDArray[np.floating], shape: tuple[int, int, int]
) -> NDArray[np.float16]:
    """:func:`area_downsample` of one volume, stored as float16 (the cache's coarse level)."""
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    return area_downsample(tensor, shape)[0, 0].numpy().astype(np.float16)


def class_fractions(label: Tensor, shape: Sequence[int], classes: int) -> Tensor:
    """The share of each class in each voxel of ``shape``, for labels ``(b, z, y, x)``:
    ``(b, classes, *shape)``, a soft one-hot target for Dice losses on a coarse grid."""
    onehot = F.one_hot(label.long(), classes).movedim(-1, 1).float()
    return area_downsample(onehot, shape)


def downsample_label(
    label: NDArray[np.integer], shape: tuple[int, int, int], classes: int
) -> NDArray[np.uint8]:
    """Majority vote: the class covering the largest part of each coarse voxel (one class
    at a time, so memory stays at two coarse volumes whatever ``classes`` is)."""
    best = torch.zeros(shape)
    result = torch.zeros(shape, dtype=torch.uint8)
    source = torch.from_numpy(np.asarray(label))
    for c in range(classes):
        share = area_downsample((source == c).float()[None, None], shape)[0, 0]
        better = share > best
        best = torch.where(better, share, best)
        result[better] = c
    return result.numpy()


def background(classes: int) -> list[float]:
    """Class probabilities of a voxel that is certainly background."""
    return [1.0] + [0.0] * (classes - 1)


def upsample_box(
    coarse: Tensor,
    shape: Sequence[int],
    origin: Sequence[int],
    size: Sequence[int],
    fill: Sequence[float],
) -> Tensor:
    """Trilinear upsampling of coarse channels (c, z', y', x') that span a volume of
    ``shape`` full-resolution voxels, evaluated on the box at ``origin`` (z, y, x) of
    ``size`` voxels; channel ``i`` is ``fill[i]`` where the box leaves the volume.

    Inside the volume it equals ``F.interpolate(coarse[None], size=shape,
    mode="trilinear", align_corners=False)`` cut to the box, without ever building the
    full-resolution volume: training crops, validation and inference slabs all read a
    coarse output through this one function. Differentiable in ``coarse``."""
    if all(o == 0 for o in origin) and tuple(size) == tuple(shape):  # the whole volume
        z, y, x = shape
        whole = F.interpolate(
            coarse[None].float(), (z, y, x), mode="trilinear", align_corners=False
        )
        return whole[0]
    device = coarse.device
    out = torch.tensor(fill, dtype=torch.float32, device=device).reshape(-1, 1, 1, 1)
    out = out.expand(coarse.shape[0], *size).clone()
    where = overlap(origin, size, shape)
    if where is None:
        return out
    inside, box = where
    # Normalised coordinates of the full-resolution voxel centres (align_corners=False).
    axes = [
        (torch.arange(s.start, s.stop, device=device, dtype=torch.float32) * 2 + 1) / n - 1
        for s, n in zip(inside, shape, strict=True)
    ]
    gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack((gx, gy, gz), -1)[None]
    sampled = F.grid_sample(
        coarse[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0]
    out[(slice(None), *box)] = sampled
    return out
