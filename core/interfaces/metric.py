"""The metric interface: one structure's predicted mask against its ground truth.

Masks are boolean (z, y, x) arrays on one grid; ``spacing`` (mm per voxel, z/y/x)
makes distances physical. The public call validates; a subclass fills ``_compute``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from duoseg.core.errors import InputShapeError
from numpy.typing import NDArray


class Metric(ABC):
    name: ClassVar[str]
    unit: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True

    def __call__(
        self, prediction: NDArray[np.bool_], target: NDArray[np.bool_], spacing: Sequence[float]
    ) -> float:
        """The metric's value; NaN when both masks are empty."""
        if prediction.shape != target.shape:
            raise InputShapeError(
                f"{self.name}: prediction shape {prediction.shape} differs from target "
                f"{target.shape}"
            )
        if len(spacing) != prediction.ndim or min(spacing) <= 0:
            raise InputShapeError(
                f"{self.name}: spacing {tuple(spacing)} must be {prediction.ndim} sizes > 0"
            )
        if not prediction.any() and not target.any():
            return float("nan")
        return self._compute(
            prediction.astype(bool), target.astype(bool), tuple(map(float, spacing))
        )

    def per_class(
        self,
        prediction: NDArray[np.integer[Any]],
        target: NDArray[np.integer[Any]],
        classes: int,
        spacing: Sequence[float] | None = None,
    ) -> list[float | None]:
        """The metric of each class 1..``classes``-1 of two label volumes; None where a
        class is in neither. ``spacing`` (mm) matters to distance metrics only; unit
        voxels by default."""
        p, t = np.asarray(prediction), np.asarray(target)
        voxel = tuple(spacing) if spacing is not None else (1.0,) * p.ndim
        scores = [self(p == c, t == c, voxel) for c in range(1, classes)]
        return [None if math.isnan(v) else v for v in scores]

    @abstractmethod
    def _compute(
        self, prediction: NDArray[np.bool_], target: NDArray[np.bool_], spacing: tuple[float, ...]
    ) -> float:
        """The value for validated masks, at least one of them non-empty."""
