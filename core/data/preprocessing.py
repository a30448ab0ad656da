"""The preprocessing record and its one builder (nnU-Net's "plan", shared by every path).

A :class:`Preprocessing` says how a case is prepared for the networks: intensity
normalisation, the coarse target spacing, the class names with their source label
values, and (once a baseline is trained) the baseline's grid. ``duoseg cache build``
writes it into the cache's completion record, training copies it into every
checkpoint, and prediction of a new image prepares that image with
:func:`prepare_case` from the checkpoint's record - the same function the cache
build runs - so a network never sees data prepared otherwise than its training data.
Where two records meet (a cache handed to a model), :meth:`Preprocessing.check_matches`
refuses a difference, naming the field and both values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from duoseg.core.data.grid import downsample_image, downsample_label, grid_shape
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import ImportedCase
from duoseg.core.interfaces.store import CaseArrays, CaseMeta
from numpy.typing import NDArray

DEFAULT_COARSE_SPACING = 3.0
DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Preprocessing:
    """How cases are prepared; ``class_names[0]`` is the background."""

    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    coarse_spacing: float = DEFAULT_COARSE_SPACING
    class_names: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()
    baseline_spacing: float | None = None  # set by training a resampled baseline

    def __post_init__(self) -> None:
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise DataError(
                f"preprocessing percentiles = {list(self.percentiles)}: need 0 <= low < high <= 100"
            )
        if not self.coarse_spacing > 0:
            raise DataError(f"preprocessing coarse_spacing = {self.coarse_spacing} mm must be > 0")
        if self.baseline_spacing is not None and not self.baseline_spacing > 0:
            raise DataError(
                f"preprocessing baseline_spacing = {self.baseline_spacing} mm must be > 0"
            )
        if len(self.class_names) != len(self.label_values):
            raise DataError(
                f"preprocessing class_names {list(self.class_names)} and label_values "
                f"{list(self.label_values)} differ in length"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, as caches and checkpoints store it."""
        return {
            "percentiles": list(self.percentiles),
            "coarse_spacing": self.coarse_spacing,
            "class_names": list(self.class_names),
            "label_values": list(self.label_values),
            "baseline_spacing": self.baseline_spacing,
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> Preprocessing:
        """Read a stored record; ``where`` names the cache or checkpoint for errors."""
        try:
            low, high = raw["percentiles"]
            baseline = raw.get("baseline_spacing")
            return cls(
                percentiles=(float(low), float(high)),
                coarse_spacing=float(raw["coarse_spacing"]),
                class_names=tuple(str(n) for n in raw["class_names"]),
                label_values=tuple(int(v) for v in raw["label_values"]),
                baseline_spacing=None if baseline is None else float(baseline),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: preprocessing record is malformed: {exc!r}") from exc

    def with_classes(self, case: ImportedCase) -> Preprocessing:
        return replace(self, class_names=case.class_names, label_values=case.label_values)

    @property
    def classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def label_map(self) -> dict[str, int]:
        """``{class name: source label value}`` of the classes 1..C (an importer's map)."""
        return dict(zip(self.class_names[1:], self.label_values[1:], strict=True))

    def digest(self) -> str:
        """What a cached case's arrays depend on besides its source files."""
        text = json.dumps([self.percentiles, self.coarse_spacing])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_matches(self, other: Preprocessing, *, ours: str, theirs: str) -> None:
        """Raise :class:`DataError` unless ``other`` prepares data as this record does.

        ``ours`` and ``theirs`` name the two records' owners in the message. The baseline
        spacing is a training choice, not a property of prepared data: not compared."""
        for name in ("coarse_spacing", "percentiles", "class_names", "label_values"):
            mine, yours = getattr(self, name), getattr(other, name)
            if mine != yours:
                raise DataError(
                    f"{theirs} was prepared with {name} = {_show(yours)} but {ours} "
                    f"expects {name} = {_show(mine)}; prepare the data the same way"
                )


def class_table(names: tuple[str, ...], values: tuple[int, ...]) -> dict[str, int]:
    """``{class name: source label value}``, background included: for messages."""
    return dict(zip(names, values, strict=True))


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


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
