"""The one builder of prepared cases (nnU-Net's preprocessing, shared by every path).

:func:`prepare_case` prepares an imported case as a preprocessing record
(:class:`~duoseg.core.records.preprocessing.Preprocessing`) says. ``duoseg cache build``
runs it, and prediction of a new image prepares that image with it from the
checkpoint's record, so a network never sees data prepared otherwise than its
training data.
"""

from __future__ import annotations

import numpy as np
from duoseg.core.data.grid import downsample_image, downsample_label, grid_shape
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import ImportedCase
from duoseg.core.interfaces.store import CaseArrays, CaseMeta
from duoseg.core.records.preprocessing import Preprocessing, class_table
from numpy.typing import NDArray


def normalise(
    image: NDArray[np.float32], percentiles: tuple[float, float]
) -> tuple[NDArray[np.float16], dict[str, float]]:
    """Clip to the given percentiles and rescale linearly to [-1, 1] (the paper's range)."""
    low, high = (float(v) for v in np.percentile(image, percentiles))
    if high <= low:
        high = low + 1.0
    # In place, in the dtype ``image - low`` would have: one volume of working memory,
    # not four, and the same values.
    scaled = np.clip(image, low, high).astype(np.result_type(image.dtype, 1.0), copy=False)
    scaled -= low
    scaled *= 2.0 / (high - low)
    scaled -= 1.0
    return scaled.astype(np.float16), {"low": low, "high": high,
                                        "percentile_low": percentiles[0],
                                        "percentile_high": percentiles[1]}  # fmt: skip


def class_counts(
    label: NDArray[np.uint8], block: tuple[int, ...], classes: int
) -> NDArray[np.int64]:
    """Voxel count per block of ``block`` shape and per class: (bz, by, bx, classes)."""
    grid = [-(-n // b) for n, b in zip(label.shape, block, strict=True)]
    counts = np.zeros((*grid, classes), np.int64)
    by_index = (np.arange(label.shape[1]) // block[1])[:, None] * grid[2]
    bx_index = (np.arange(label.shape[2]) // block[2])[None, :]
    block_id = (by_index + bx_index) * classes  # (y, x) -> first bin of its block
    for bz in range(grid[0]):
        slab = label[bz * block[0] : (bz + 1) * block[0]]
        bins = np.bincount((block_id[None] + slab).ravel(), minlength=grid[1] * grid[2] * classes)
        counts[bz] = bins.reshape(grid[1], grid[2], classes)
    return counts


def prepare_case(
    case: ImportedCase,
    plan: Preprocessing,
    *,
    checksums: dict[str, str],
    chunks: tuple[int, ...],
) -> CaseArrays:
    """Everything a cache stores for one imported case, prepared as ``plan`` says.

    The one builder: ``duoseg cache build`` and prediction of a new image both call it.
    ``chunks`` is the label's chunk shape, the block of the class index."""
    if plan.class_names and (case.class_names, case.label_values) != (
        plan.class_names,
        plan.label_values,
    ):
        raise DataError(
            f"case {case.case_id}: classes {class_table(case.class_names, case.label_values)} "
            f"differ from the preprocessing record's "
            f"{class_table(plan.class_names, plan.label_values)}"
        )
    image, normalisation = normalise(case.image, plan.percentiles)
    small = grid_shape(image.shape, case.spacing, plan.coarse_spacing)
    coarse = downsample_image(image, small)
    classes = len(case.class_names)
    label = coarse_label = None
    counts = np.zeros((0, 0, 0, classes), np.int64)
    if case.label is not None:
        label = case.label
        coarse_label = downsample_label(label, small, classes)
        counts = class_counts(label, chunks, classes)
    extent = [n * s for n, s in zip(image.shape, case.spacing, strict=True)]
    meta = CaseMeta(
        case_id=case.case_id,
        shape=(image.shape[0], image.shape[1], image.shape[2]),
        spacing=case.spacing,
        coarse_shape=small,
        coarse_spacing=(extent[0] / small[0], extent[1] / small[1], extent[2] / small[2]),
        canonical_affine=case.canonical_affine.tolist(),
        source_affine=case.source_affine.tolist(),
        source_shape=case.source_shape,
        class_names=case.class_names,
        label_values=case.label_values,
        normalisation=normalisation,
        checksums=checksums,
        has_label=label is not None,
        coarse_target=plan.coarse_spacing,
    )
    return CaseArrays(meta, image, label, coarse, coarse_label, counts)
