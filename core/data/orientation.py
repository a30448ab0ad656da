"""Between a source NIfTI grid and duoseg's canonical (z, y, x) RAS+ arrays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import nibabel as nib
import numpy as np
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import ImportedCase
from numpy.typing import NDArray

RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
# DICOM/ITK world coordinates (LPS) to NIfTI's (RAS): the first two axes change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def check_volume(
    where: object, shape: tuple[int, ...], zooms: NDArray[np.float64], affine: NDArray[Any]
) -> None:
    """Refuse what duoseg cannot place in space: not 3-D, a voxel spacing that is not
    finite and positive, a degenerate affine (``where`` names the file or image)."""
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"{where}: field dim: a 3-D volume is required, got shape {shape}")
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise DataError(
            f"{where}: field pixdim: voxel spacing {tuple(zooms.tolist())} must be finite and > 0"
        )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{where}: field sform/qform: affine is degenerate: {affine.tolist()}")


def canonical_spacing(
    affine: NDArray[np.float64], zooms_xyz: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Spacing (z, y, x) of the canonical array: source zooms permuted to RAS order."""
    ornt = nib.io_orientation(affine)
    ras = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        ras[int(target_axis)] = zooms_xyz[source_axis]
    return (ras[2], ras[1], ras[0])


def canonical_case(
    case_id: str,
    image_xyz: NDArray[np.float32],
    affine: NDArray[np.float64],
    zooms_xyz: tuple[float, float, float],
    *,
    where: object,
    classes: tuple[tuple[str, ...], tuple[int, ...]],
    label_xyz: NDArray[np.uint8] | None = None,
) -> ImportedCase:
    """An image in its source grid (nibabel's (i, j, k) order, ``affine`` to RAS+ mm) as
    a canonical case; ``classes`` are the class names and their label values. Intensities
    that are not finite are refused naming ``where``."""
    bad = int(image_xyz.size - np.count_nonzero(np.isfinite(image_xyz)))
    if bad:
        raise DataError(f"{where}: field data: {bad} NaN/Inf intensity values")
    shape = tuple(int(n) for n in image_xyz.shape)
    return ImportedCase(
        case_id=case_id,
        image=to_canonical(image_xyz, affine),
        label=None if label_xyz is None else to_canonical(label_xyz, affine),
        spacing=canonical_spacing(affine, zooms_xyz),
        canonical_affine=canonical_affine(affine, shape),
        source_affine=affine,
        source_shape=(shape[0], shape[1], shape[2]),
        class_names=classes[0],
        label_values=classes[1],
    )
