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
    ``(b, classes, *shape)``, a soft one-hot target for Dice losses on a coarse grid.
    One class at a time: a full-resolution one-hot of int64 was 3x slower (224^3 voxels,
    8 classes: 1.2 s against 0.4 s)."""
    shares = [area_downsample((label == c).float()[:, None], shape) for c in range(classes)]
    return torch.cat(shares, 1)


def downsample_label(
    label: NDArray[np.integer], shape: tuple[int, int, int], classes: int
) -> NDArray[np.uint8]:
    """Majority vote: the class covering the largest part of each coarse voxel (the first
    such class on a tie, as ``argmax`` picks)."""
    shares = class_fractions(torch.from_numpy(np.asarray(label))[None], shape, classes)[0]
    return shares.argmax(0).to(torch.uint8).numpy()


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

    Inside the volume it equals (to rounding) ``F.interpolate(coarse[None], size=shape,
    mode="trilinear", align_corners=False)`` cut to the box, without ever building the
    full-resolution volume: training crops, validation and inference slabs all read a
    coarse output through this one function. Differentiable in ``coarse``. The result
    may be a view of a larger tensor: copy it to keep it."""
    if all(o == 0 for o in origin) and tuple(size) == tuple(shape):  # the whole volume
        z, y, x = shape
        whole = F.interpolate(
            coarse[None].float(), (z, y, x), mode="trilinear", align_corners=False
        )
        return whole[0]
    where = overlap(origin, size, shape)
    if where is not None and all(slice_length(b) == n for b, n in zip(where[1], size, strict=True)):
        return _trilinear(coarse.float(), shape, where[0])  # the box lies inside the volume
    out = torch.tensor(fill, dtype=torch.float32, device=coarse.device).reshape(-1, 1, 1, 1)
    out = out.expand(coarse.shape[0], *size).clone()
    if where is None:
        return out
    inside, box = where
    out[(slice(None), *box)] = _trilinear(coarse.float(), shape, inside)
    return out


def _trilinear(coarse: Tensor, shape: Sequence[int], inside: tuple[slice, ...]) -> Tensor:
    """Trilinear upsampling of ``coarse`` (c, z', y', x') spanning ``shape``, at the
    voxels ``inside``: separable, linear along z first (on the coarse plane, cheap).

    In-plane, torch's bilinear kernel over the whole plane is 4x faster than two
    gathers per axis, so it is used (and cut to the box: a view) where the box covers
    half the plane or more; smaller boxes (training crops, most ROIs) are gathered, so
    the whole-plane intermediate is at most twice the box."""
    (wanted_z, wanted_y, wanted_x), (_, full_y, full_x) = inside, shape
    planes = _linear_along(coarse, 1, wanted_z, shape[0])
    if slice_length(wanted_y) * slice_length(wanted_x) * 2 >= full_y * full_x:
        c, z = planes.shape[:2]
        whole = F.interpolate(planes.reshape(1, c * z, *planes.shape[2:]), (full_y, full_x),
                              mode="bilinear", align_corners=False)  # fmt: skip
        return whole.reshape(c, z, full_y, full_x)[:, :, wanted_y, wanted_x]
    # A gather along the last axis is slow: interpolate x on the transposed planes.
    planes = _linear_along(planes.transpose(2, 3).contiguous(), 2, wanted_x, full_x)
    return _linear_along(planes.transpose(2, 3).contiguous(), 2, wanted_y, full_y)


def slice_length(axis: slice) -> int:
    """The number of indices of a slice with explicit, ordered start and stop."""
    return int(axis.stop - axis.start)


def _linear_along(x: Tensor, dim: int, wanted: slice, full: int) -> Tensor:
    """Linear interpolation of ``x`` along ``dim`` (``m`` samples spanning ``full``
    voxels) at full-resolution voxels ``wanted``: voxel i sits at coarse coordinate
    u = (i + 1/2) m / full - 1/2, clamped to [0, m - 1] (``align_corners=False`` with
    border padding)."""
    m = x.shape[dim]
    # Coordinates on the CPU in float64 (exact for any size), then moved: few numbers.
    i = torch.arange(wanted.start, wanted.stop, dtype=torch.float64)
    u = ((i + 0.5) * (m / full) - 0.5).clamp(0, m - 1)
    low = u.floor().long()
    high = (low + 1).clamp_max(m - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    weight = (u - low).to(x.dtype).reshape(shape).to(x.device)
    low, high = low.to(x.device), high.to(x.device)
    return torch.lerp(x.index_select(dim, low), x.index_select(dim, high), weight)
