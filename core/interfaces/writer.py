"""The writer interface: an output format of ``duoseg predict``.

The streaming driver hands each case's labels, slab by slab, to a :class:`LabelSink`; a
writer (a ``writer`` plugin: NIfTI, Zarr, DICOM-SEG, a third party's NRRD) says which
OUTPUT paths it writes and makes the sink that writes a run's cases into OUTPUT. The
engine keeps what all formats share: the OUTPUT folder's run record and completion
record, resuming, sharding cases over torchrun's ranks.

``duoseg predict --format NAME`` picks a writer by its registered name; without it, the
one writer whose :meth:`Writer.implied_by` claims OUTPUT's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
from duoseg.core.records.case import CaseMeta
from numpy.typing import NDArray

Series = Mapping[str, tuple[Path, ...]]  # each case's DICOM files, in slice order, if any


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


class Writer(ABC):
    """An output format. Class attributes a subclass sets:

    * ``output_help``: what OUTPUT this format writes, for messages (``"*.zarr"``);
    * ``example_output``: an OUTPUT name it writes (``"labels.zarr"``), for tests;
    * ``probabilities``: whether it can store class probabilities besides labels;
    * ``needs_series``: whether each case must come from a DICOM series (the format
      references the series it segments).
    """

    output_help: ClassVar[str] = "a folder"
    example_output: ClassVar[str] = "labels"
    probabilities: ClassVar[bool] = False
    needs_series: ClassVar[bool] = False

    @abstractmethod
    def fits(self, output: Path) -> bool:
        """Whether this format can write OUTPUT ``output`` (``--format`` given)."""

    def implied_by(self, output: Path) -> bool:
        """Whether OUTPUT's name alone chooses this format (no ``--format``); default no."""
        return False

    def is_file(self, output: Path) -> bool:
        """Whether OUTPUT is one file holding one case (not a folder of cases)."""
        return False

    @abstractmethod
    def sink(self, output: Path, series: Series) -> FolderSink:
        """The sink writing every case of a run into the folder OUTPUT."""

    def file_sink(self, output: Path) -> LabelSink:
        """The sink writing one case to the file OUTPUT (where :meth:`is_file`)."""
        raise NotImplementedError(f"{type(self).__name__} writes no single-file OUTPUT")
