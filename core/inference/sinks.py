"""Where predicted slabs go: the sink protocol the streaming driver writes to, a sink
that keeps a case in memory, and the base of sinks that write a run's OUTPUT folder."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from duoseg.core.inference.postprocess import largest_components
from duoseg.core.interfaces.store import CaseMeta
from numpy.typing import NDArray


class LabelSink:
    """Where predicted slabs go; implemented by the Zarr and NIfTI outputs."""

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        """Prepare the case; return how many leading slices are already written (resume)."""
        raise NotImplementedError

    def write(
        self, z: int, labels: NDArray[np.uint8], probabilities: NDArray[np.float16] | None
    ) -> None:
        raise NotImplementedError

    def end(self, meta: CaseMeta, lcc_box: tuple[slice, ...] | None) -> None:
        raise NotImplementedError


class FolderSink(LabelSink, ABC):
    """A sink writing every case of a run into one OUTPUT folder, each case on its own."""

    @abstractmethod
    def finished(self, case_id: str) -> bool:
        """Whether ``case_id``'s output is all written (a saved report alone is no proof)."""


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
