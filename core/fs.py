"""Files written so that a reader never sees them half-written, and a crash loses nothing
that was reported written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """Where :func:`write_atomically` writes ``path`` before renaming it."""
    return path.with_name(f".{path.name}.tmp")


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, fsync the file, then rename it over ``path``.

    A reader never sees a half-written file under the final name. An exception removes
    the temporary file; only a killed process leaves a ``.tmp`` sibling, which the next
    write replaces (and the trainer removes on start).
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an error leaves no temporary behind
        raise
    fsync_directory(path.parent)
