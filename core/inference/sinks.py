"""A sink that keeps a predicted case in memory (validation, notebooks); the sink
protocol itself is :mod:`duoseg.core.interfaces.writer`'s."""

from __future__ import annotations

import numpy as np
from duoseg.core.inference.postprocess import largest_components
from duoseg.core.interfaces.writer import LabelSink
from duoseg.core.records.case import CaseMeta
from numpy.typing import NDArray


class MemorySink(LabelSink):
    """Keeps a case's labels (and probabilities) in memory: for validation and notebooks."""

    labels: NDArray[np.uint8]
    probabilities: NDArray[np.float16] | None

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        self.labels = np.zeros(meta.shape, np.uint8)
        classes = len(meta.class_names)
        self.probabilities = np.zeros((classes, *meta.shape), np.float16) if probabilities else None
        return 0

    def write(
        self, z: int, labels: NDArray[np.uint8], probabilities: NDArray[np.float16] | None
    ) -> None:
        self.labels[z : z + len(labels)] = labels
        if self.probabilities is not None and probabilities is not None:
            self.probabilities[:, z : z + len(labels)] = probabilities

    def end(self, meta: CaseMeta, lcc_box: tuple[slice, ...] | None) -> None:
        if lcc_box is not None:
            self.labels[lcc_box] = largest_components(self.labels[lcc_box], len(meta.class_names))
