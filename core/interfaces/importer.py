"""The importer interface: source files in, canonical (z, y, x) cases out.

Every importer returns :class:`ImportedCase` records in one orientation - RAS+,
arrays indexed (z, y, x) with z the axial slice - and keeps the source affine and
shape so that predictions can be written back in the source's own grid.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from duoseg.core.errors import DataError
from numpy.typing import NDArray

T = TypeVar("T")


@dataclass(frozen=True)
class SourcePair:
    """An image file and its label file, found by an importer's discovery.

    An image stored as many files (a DICOM series) names its folder as ``image`` and
    lists its files, in slice order, as ``files``; a one-file image leaves it empty."""

    case_id: str
    image: Path
    label: Path | None
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ImportedCase:
    """One case in canonical orientation: RAS+, arrays (z, y, x)."""

    case_id: str
    image: NDArray[np.float32]
    label: NDArray[np.uint8] | None
    spacing: tuple[float, float, float]  # z, y, x mm
    canonical_affine: NDArray[np.float64]  # voxel (x, y, z) of the canonical array -> mm
    source_affine: NDArray[np.float64]
    source_shape: tuple[int, int, int]
    class_names: tuple[str, ...]  # index -> name, 0 = background
    label_values: tuple[int, ...]  # index -> value in the source label files


class Importer(ABC):
    """Finds cases in a source folder and reads them; subclasses fill both methods."""

    @abstractmethod
    def discover(self, source: Path) -> list[SourcePair]:
        """The cases under ``source``, sorted by id; raise :class:`DataError` if none."""

    @abstractmethod
    def load(self, pair: SourcePair) -> ImportedCase:
        """Read and validate one case."""

    def images(self, source: Path, cases: Sequence[str] | None) -> list[SourcePair]:
        """The images ``duoseg predict`` reads from INPUT ``source`` (a file or a folder),
        without labels, in case order; ``cases`` (all when None) picks some. ``[]`` when
        ``source`` holds none of this importer's images. Prediction asks every importer
        whose factory takes the model's label map (``labels``) and ``require_labels``;
        the default reads none (an importer of labelled data sets only)."""
        return []

    def discover_cases(
        self, source: Path, cases: Sequence[str] | None, *, labels: bool = True
    ) -> list[SourcePair]:
        """The cases ``cases`` (all when None) under ``source``, in that order; without
        their labels unless ``labels``. An importer that validates during discovery
        overrides this to validate only the cases asked for."""
        found = {pair.case_id: pair for pair in self.discover(source)}
        return [
            pair if labels else replace(pair, label=None) for pair in pick(found, cases, source)
        ]


def pick(found: Mapping[str, T], cases: Sequence[str] | None, source: Path) -> list[T]:
    """``found[c]`` for each of ``cases`` (all, in order, when None or empty); an
    unknown id is refused naming the ids there are."""
    unknown = sorted(set(cases or ()) - set(found))
    if unknown:
        raise DataError(f"{source}: no case {unknown}; its cases: {sorted(found)}")
    return [found[c] for c in cases] if cases else list(found.values())


def image_checksum(pair: SourcePair) -> str:
    """SHA-256 of the image's file, or of its files' names and checksums in order."""
    if not pair.files:
        return file_checksum(pair.image)
    digest = hashlib.sha256()
    for path in pair.files:
        digest.update(f"{path.name}\0{file_checksum(path)}\n".encode())
    return digest.hexdigest()


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def integer_labels(raw: NDArray[Any], path: Path) -> NDArray[np.int64]:
    """A label file's voxels as integers. Float voxels must hold whole numbers: a map
    resampled in floating point can hold 499.9999, which truncation would make 499 (no
    class) and rounding might give the wrong class; it is refused, naming the values."""
    if np.issubdtype(raw.dtype, np.floating):
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not whole.all():
            examples = np.unique(raw[~whole])[:5].tolist()
            raise DataError(
                f"{path}: field data: non-integer label values {examples} (a label map holds "
                "whole numbers; round it where it was resampled)"
            )
    elif not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{path}: field datatype: labels must be integers, got {raw.dtype}")
    return raw.astype(np.int64)
