"""Finding and reading DICOM files: the Part 10 preamble ("DICM" at byte 128) without a
DICOM library, and pydicom/highdicom imported only when a file is read.

Prediction uses the preamble to tell a folder of DICOM series from a folder of NIfTI
files before any optional package is imported; the ``dicom`` importer uses it to list a
folder's files. The importer and the DICOM-SEG output share the lazy imports and
:func:`read_dataset`.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from duoseg.core.errors import DataError

PREAMBLE_END = 128
MAGIC = b"DICM"
INSTALL = 'pip install "duoseg[dicom]"'
Dataset = Any  # pydicom.Dataset: pydicom is imported only when a file is read


def library(name: str, purpose: str) -> Any:
    """``import name`` (pydicom, highdicom), or an error naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(f"{purpose} needs {name}: {INSTALL}") from None


@contextmanager
def quiet() -> Iterator[None]:
    """pydicom warns about odd values it reads; duoseg checks every value it uses and
    names the file and tag, so its warnings would only repeat that less clearly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_dataset(path: Path, *, pixels: bool) -> Dataset:
    """One DICOM file (headers only unless ``pixels``), or duoseg's error naming it."""
    pydicom = library("pydicom", "reading DICOM")
    try:
        with quiet():
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except MemoryError:
        raise DataError(f"{path}: the file does not fit in memory") from None
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(f"{path}: not a readable DICOM file: {exc}") from exc


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then "DICM". A file that cannot be
    read is refused, not passed over: a series missing a slice would import short."""
    try:
        with open(path, "rb") as handle:
            handle.seek(PREAMBLE_END)
            return handle.read(len(MAGIC)) == MAGIC
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from None


def _files(folder: Path) -> Iterator[Path]:
    """Every regular file under ``folder``, in sorted order. A link is refused: followed,
    it could lead outside the folder or round in a loop; skipped, it would silently drop
    a slice."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in dirs:
            _refuse_link(Path(root) / name)
        for name in sorted(names):
            path = Path(root) / name
            _refuse_link(path)
            if path.is_file():
                yield path


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise DataError(
            f"{path}: a symbolic link; DICOM folders are read without following links "
            "(copy the files in instead)"
        )


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (recursively), sorted by path."""
    return [path for path in _files(folder) if is_dicom_file(path)]


def holds_dicom(folder: Path) -> bool:
    """Whether any regular file under ``folder`` is a DICOM file (stops at the first).
    A probe, not a read: links are passed over here (a folder of linked NIfTI files is
    no DICOM folder) and refused when the folder is read as one (:func:`dicom_files`)."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_symlink() and path.is_file() and is_dicom_file(path):
                return True
    return False
