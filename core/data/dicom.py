"""Finding DICOM files without a DICOM library: the Part 10 preamble, "DICM" at byte 128.

Prediction uses it to tell a folder of DICOM series from a folder of NIfTI files before
any optional package is imported; the ``dicom`` importer uses it to list a folder's files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PREAMBLE_END = 128
MAGIC = b"DICM"


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then "DICM"."""
    try:
        with open(path, "rb") as handle:
            handle.seek(PREAMBLE_END)
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:  # unreadable or vanished: not a file we can import
        return False


def _files(folder: Path) -> Iterator[Path]:
    """Every regular file under ``folder``, in sorted order; links are not followed, so a
    link cannot lead the walk outside the folder or round in a loop."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (recursively), sorted by path."""
    return [path for path in _files(folder) if is_dicom_file(path)]


def holds_dicom(folder: Path) -> bool:
    """Whether any file under ``folder`` is a DICOM file (stops at the first)."""
    return any(is_dicom_file(path) for path in _files(folder))
