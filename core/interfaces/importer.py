"""The importer interface: source files in, canonical (z, y, x) cases out.

Every importer returns :class:`ImportedCase` records in one orientation - RAS+,
arrays indexed (z, y, x) with z the axial slice - and keeps the source affine and
shape so that predictions can be written back in the source's own grid.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


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
