"""The one builder of prepared cases (nnU-Net's preprocessing, shared by every path).

:func:`prepare_case` prepares an imported case as a preprocessing record
(:class:`~duoseg.core.records.preprocessing.Preprocessing`) says: normalised intensities
and every level's resampled grid. ``duoseg cache build`` runs it, and prediction of a new
image prepares that image with it from the checkpoint's record, so a network never sees
data prepared otherwise than its training data.
"""

from __future__ import annotations

import numpy as np
from duoseg.core.data.grid import downsample_image, downsample_label, grid_shape
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import ImportedCase
from duoseg.core.interfaces.store import CaseArrays, LevelArrays
from duoseg.core.records.case import CaseMeta, LevelMeta
from duoseg.core.records.preprocessing import Level, Preprocessing, class_table
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
    preprocessing: Preprocessing,
    *,
    checksums: dict[str, str],
    chunks: tuple[int, ...],
) -> CaseArrays:
    """Everything a cache stores for one imported case, prepared as ``preprocessing`` says.

    The one builder: ``duoseg cache build`` and prediction of a new image both call it.
    ``chunks`` is the label's chunk shape, the block of the class index."""
    if preprocessing.class_names and (case.class_names, case.label_values) != (
        preprocessing.class_names,
        preprocessing.label_values,
    ):
        raise DataError(
            f"case {case.case_id}: classes {class_table(case.class_names, case.label_values)} "
            f"differ from the preprocessing record's "
            f"{class_table(preprocessing.class_names, preprocessing.label_values)}"
        )
    image, normalisation = normalise(case.image, preprocessing.percentiles)
    classes = len(case.class_names)
    label = case.label
    counts = np.zeros((0, 0, 0, classes), np.int64)
    if label is not None:
        counts = class_counts(label, chunks, classes)
    levels = {lv.name: level_arrays(image, label, case.spacing, lv, classes)
              for lv in preprocessing.levels}  # fmt: skip
    meta = CaseMeta(
        case_id=case.case_id,
        shape=(image.shape[0], image.shape[1], image.shape[2]),
        spacing=case.spacing,
        levels={name: arrays.meta for name, arrays in levels.items()},
        canonical_affine=case.canonical_affine.tolist(),
        source_affine=case.source_affine.tolist(),
        source_shape=case.source_shape,
        class_names=case.class_names,
        label_values=case.label_values,
        normalisation=normalisation,
        checksums=checksums,
        has_label=label is not None,
    )
    return CaseArrays(meta, image, label, levels, counts)


def level_arrays(
    image: NDArray[np.float16],
    label: NDArray[np.uint8] | None,
    spacing: tuple[float, float, float],
    level: Level,
    classes: int,
) -> LevelArrays:
    """One level of a case: the image area-averaged onto the level's grid, the label by
    majority, and the grid's measured spacing (the extent over the voxel count)."""
    shape = grid_shape(image.shape, spacing, level.target_mm)
    extent = [n * s for n, s in zip(image.shape, spacing, strict=True)]
    measured = (extent[0] / shape[0], extent[1] / shape[1], extent[2] / shape[2])
    return LevelArrays(
        LevelMeta(level.target_mm, shape, measured),
        downsample_image(image, shape),
        None if label is None else downsample_label(label, shape, classes),
    )
