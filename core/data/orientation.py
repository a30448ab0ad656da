"""Between a source NIfTI grid and duoseg's canonical (z, y, x) RAS+ arrays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


class Boxes(Protocol):
    """A (z, y, x) array that reads boxes: a numpy array, or one on disk."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, box: tuple[slice, ...], /) -> NDArray[Any]: ...


def to_canonical(data_xyz: NDArray[Any], affine: NDArray[np.float64]) -> NDArray[Any]:
    """Reorient a nibabel-ordered (i, j, k) array to canonical (z, y, x) RAS+."""
    transform = nib.orientations.ornt_transform(nib.io_orientation(affine), RAS)
    ras = nib.orientations.apply_orientation(data_xyz, transform)
    return np.ascontiguousarray(np.asarray(ras).transpose(2, 1, 0))


def to_source(data_zyx: NDArray[Any], source_affine: NDArray[np.float64]) -> NDArray[Any]:
    """Inverse of :func:`to_canonical`: back to the source file's (i, j, k) order."""
    transform = nib.orientations.ornt_transform(RAS, nib.io_orientation(source_affine))
    return np.ascontiguousarray(
        nib.orientations.apply_orientation(data_zyx.transpose(2, 1, 0), transform)
    )


def canonical_affine(
    source_affine: NDArray[np.float64], shape: tuple[int, ...]
) -> NDArray[np.float64]:
    """The affine of the canonical array (voxel (x, y, z) order), as nibabel would give it."""
    ornt = nib.io_orientation(source_affine)
    transform = nib.orientations.ornt_transform(ornt, RAS)
    inverse = nib.orientations.inv_ornt_aff(transform, shape)
    return np.asarray(source_affine @ inverse, dtype=np.float64)


def source_blocks(
    data_zyx: Boxes, source_affine: NDArray[np.float64], planes: int
) -> Iterator[NDArray[Any]]:
    """:func:`to_source` of a canonical array, block by block: blocks of at most
    ``planes`` planes of the source's last (slowest on disk) axis, in file order, each
    read from ``data_zyx`` (a memory map, say) only when it is due."""
    transform = nib.orientations.ornt_transform(RAS, nib.io_orientation(source_affine))
    moved = int(np.flatnonzero(transform[:, 0] == 2)[0])  # the (x, y, z) axis that becomes k
    axis = 2 - moved  # the same axis of the (z, y, x) array
    flipped = transform[moved, 1] == -1
    n = data_zyx.shape[axis]
    for k0 in range(0, n, planes):
        k1 = min(k0 + planes, n)
        box: list[slice] = [slice(None)] * 3
        # A flipped axis reverses inside the block too, so the block comes from the far end.
        box[axis] = slice(n - k1, n - k0) if flipped else slice(k0, k1)
        yield to_source(np.asarray(data_zyx[tuple(box)]), source_affine)
