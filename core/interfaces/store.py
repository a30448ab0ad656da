"""The volume cache: what training and inference read, in any store format.

One cache holds cases; each case has, as lazily read (z, y, x) arrays:

- ``image``: intensities normalised to [-1, 1] (float16; parameters in ``meta``),
- ``label``: class indices (uint8), absent for unlabelled cases,
- per level (a resampled grid, :class:`LevelMeta`) ``<level>_image`` /
  ``<level>_label``: the same on that grid - ``coarse_image`` / ``coarse_label`` for the
  ``coarse`` level every cache has (Net1's, 3 mm by default), ``baseline_image`` /
  ``baseline_label`` for a 2 mm level a cache built with ``--level baseline=2`` adds,

plus ``class_counts``: per block of the label's chunk grid, per class, the voxel
count, so that class-balanced sampling picks a block and then reads one chunk only.
A cache is complete only when its completion record, written last, says so; a
missing or truncated chunk is an error naming the case and chunk, never zeros.

Stores (Zarr, HDF5, ...) are ``store`` plugins implementing :class:`VolumeStore`
(with its :class:`CacheReader` and :class:`CacheWriter`); this module is their
interface and the layout they share. :func:`duoseg.core.data.cache.open_cache` asks
each registered store whether it recognises a path.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from duoseg.core.errors import DataError
from duoseg.core.records.case import CaseMeta, LevelMeta, level_array_names
from duoseg.core.records.preprocessing import COARSE, Preprocessing
from numpy.typing import NDArray

CACHE_FORMAT: Final = "duoseg-cache"
# 2: the completion record holds the preprocessing record; 3: named levels (a version 2
# cache reads as one holding the coarse level only: its layout is version 3's).
CACHE_VERSION: Final = 3
READABLE_VERSIONS: Final = (2, 3)
COMPLETION_FILE: Final = "duoseg-complete.json"  # a cache's or an output's record, written last
# Chosen by benchmark (docs/data.md): uncompressed (16, 128, 128) chunks read 924
# random 64^3 image+label pairs/s and 325 K=9 stacks of 512^2 slices/s on 2 cores.
DEFAULT_CHUNKS: Final = (16, 128, 128)
Region = tuple[slice, slice, slice]


class ChunkedArray(ABC):
    """A (z, y, x) array on disk; indexing with slices reads only the chunks needed."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: tuple[int, ...],
                 where: str) -> None:  # fmt: skip
        self.shape = shape
        self.dtype = dtype
        self.chunks = chunks
        self.where = where  # "cache X, case Y, array Z" for error messages

    def __getitem__(self, key: Any) -> NDArray[Any]:
        return self.read(self._region(key))

    def read(self, region: Sequence[slice]) -> NDArray[Any]:
        """Read a box of the array: one slice per axis, step 1, inside the bounds."""
        return self._read(tuple(region))

    def _region(self, key: Any) -> tuple[slice, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (len(self.shape) - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (len(self.shape) - len(key))
        if len(key) != len(self.shape):
            raise IndexError(f"{self.where}: {len(key)} indices for a {len(self.shape)}-D array")
        region = []
        for k, n in zip(key, self.shape, strict=True):
            box = slice(int(k) % n, int(k) % n + 1) if isinstance(k, int | np.integer) else k
            start, stop, step = box.indices(n)
            if step != 1:
                raise IndexError(f"{self.where}: only step 1 slices are supported, got {k}")
            region.append(slice(start, max(start, stop)))
        return tuple(region)

    def chunks_touched(self, region: Sequence[slice]) -> Iterator[tuple[int, ...]]:
        """Indices of the chunks a box overlaps, in C order."""
        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1) if s.stop > s.start else range(0)
            for s, c in zip(region, self.chunks, strict=True)
        ]
        return itertools.product(*ranges)

    def chunk_grid(self) -> Iterator[tuple[int, ...]]:
        """Every chunk index, in C order."""
        counts = [-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True)]
        yield from np.ndindex(*counts)

    def chunk_region(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )

    @abstractmethod
    def _read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        """Read a validated box; raise :class:`DataError` naming the chunk if one is bad."""


@dataclass(frozen=True)
class CaseLevel:
    """A level's arrays in an open case (the label absent where the case has none)."""

    image: ChunkedArray
    label: ChunkedArray | None


@dataclass
class CacheCase:
    """One case of an open cache; arrays are read lazily."""

    meta: CaseMeta
    image: ChunkedArray
    label: ChunkedArray | None
    levels: dict[str, CaseLevel]
    class_counts: NDArray[np.int64]  # (blocks z, y, x, classes)

    @classmethod
    def from_arrays(cls, meta: CaseMeta, array: Callable[[str], ChunkedArray]) -> CacheCase:
        """Open a case's arrays by name with ``array`` (a store's reader)."""
        levels = {}
        for name in meta.levels:
            image, label = level_array_names(name)
            levels[name] = CaseLevel(array(image), array(label) if meta.has_label else None)
        return cls(
            meta=meta,
            image=array("image"),
            label=array("label") if meta.has_label else None,
            levels=levels,
            class_counts=array("class_counts")[...].astype(np.int64),
        )

    @property
    def case_id(self) -> str:
        return self.meta.case_id

    def level(self, name: str) -> CaseLevel:
        self.meta.level(name)  # refuses an unknown level, naming the case's
        return self.levels[name]

    @property
    def coarse_image(self) -> ChunkedArray:
        return self.level(COARSE).image

    @property
    def coarse_label(self) -> ChunkedArray | None:
        return self.level(COARSE).label

    def volumes(self) -> dict[str, ChunkedArray]:
        """Every volume of the case by its array name (the class index aside)."""
        found = {"image": self.image, "label": self.label}
        for name, level in self.levels.items():
            found.update(zip(level_array_names(name), (level.image, level.label), strict=True))
        return {key: array for key, array in found.items() if array is not None}

    @property
    def label_block(self) -> tuple[int, ...]:
        """The block shape of ``class_counts``: the label array's chunk shape."""
        if self.label is None:
            raise DataError(f"case {self.case_id} has no label")
        return self.label.chunks


class CacheReader(ABC):
    """An open, complete cache."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record

    def cases(self) -> list[str]:
        """Case ids, sorted, as the completion record lists them."""
        return list(self.record["cases"])

    @property
    def preprocessing(self) -> Preprocessing:
        """How every case of this cache was prepared."""
        return Preprocessing.from_dict(self.record.get("preprocessing"), where=str(self.path))

    def case(self, case_id: str) -> CacheCase:
        if case_id not in self.record["cases"]:
            raise DataError(
                f"{self.path}: no case {case_id!r}; cases: {', '.join(self.cases()[:10])}"
            )
        return self._case(case_id)

    def verify(self) -> list[str]:
        """Read every chunk of every case and compare digests; return the problems found."""
        problems: list[str] = []
        for case_id in self.cases():
            try:
                case = self.case(case_id)
            except DataError as exc:
                problems.append(str(exc))
                continue
            for name, array in case.volumes().items():
                problems += verify_array(array, case.meta.digests.get(name))
        return problems

    @abstractmethod
    def _case(self, case_id: str) -> CacheCase:
        """Open one listed case."""

    def close(self) -> None:  # noqa: B027 - stores without handles need nothing
        """Release file handles."""

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def array_digest(array: NDArray[Any] | ChunkedArray, chunks: tuple[int, ...]) -> str:
    """SHA-256 of an array's bytes taken chunk by chunk in C order of the chunk grid."""
    import hashlib

    digest = hashlib.sha256()
    counts = [-(-n // c) for n, c in zip(array.shape, chunks, strict=True)]
    for index in np.ndindex(*counts):
        region = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, array.shape, strict=True)
        )
        block = array.read(region) if isinstance(array, ChunkedArray) else array[region]
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()


def verify_array(array: ChunkedArray, expected: str | None) -> list[str]:
    try:
        actual = array_digest(array, array.chunks)
    except DataError as exc:
        return [str(exc)]
    if expected is not None and actual != expected:
        return [f"{array.where}: contents differ from the digest recorded at build time"]
    return []


@dataclass(frozen=True)
class LevelArrays:
    """A level of a case as prepared: its metadata, image and label (if any)."""

    meta: LevelMeta
    image: NDArray[np.float16]
    label: NDArray[np.uint8] | None


@dataclass(frozen=True)
class CaseArrays:
    """What a store writes for one case."""

    meta: CaseMeta
    image: NDArray[np.float16]
    label: NDArray[np.uint8] | None
    levels: dict[str, LevelArrays]
    class_counts: NDArray[np.int64]

    def volumes(self) -> dict[str, NDArray[Any]]:
        """The case's volumes by array name (image, label, each level's), absent ones left
        out; the class index aside."""
        found = {"image": self.image, "label": self.label}
        for name, level in self.levels.items():
            found.update(zip(level_array_names(name), (level.image, level.label), strict=True))
        return {key: array for key, array in found.items() if array is not None}

    def named(self) -> dict[str, NDArray[Any]]:
        """Every array a store writes, by name: the volumes and ``class_counts``."""
        return {**self.volumes(), "class_counts": self.class_counts}


def array_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """The chunk shape a store gives an array: ``chunks`` on the spatial axes, no larger
    than the array (the coarse level and class counts get one chunk per axis at most)."""
    spatial = tuple(min(c, n) for c, n in zip(chunks, shape, strict=False))
    return spatial + tuple(shape[len(chunks) :])


class CacheWriter(ABC):
    """Adds, replaces and drops cases, then writes the completion record last."""

    @abstractmethod
    def case_metas(self) -> dict[str, CaseMeta]:
        """The metadata of the complete cases already present, by case id."""

    @abstractmethod
    def write_case(self, arrays: CaseArrays) -> None:
        """Write one case atomically: a reader never sees it half-written."""

    @abstractmethod
    def drop_case(self, case_id: str) -> None:
        """Remove a case that is no longer in the source."""

    @abstractmethod
    def commit(self, record: dict[str, Any]) -> None:
        """Write the completion record; the cache opens as complete only after this."""

    @abstractmethod
    def abort(self) -> None:
        """Stop without a completion record (the cache stays incomplete)."""


class VolumeStore(ABC):
    """A cache format: a ``store`` plugin. ``chunks`` and ``codec`` apply to new arrays."""

    name: str

    def __init__(self, *, chunks: Sequence[int] = DEFAULT_CHUNKS, codec: str = "none") -> None:
        if len(chunks) != 3 or min(chunks) < 1:
            raise DataError(f"store chunks must be three sizes >= 1, got {tuple(chunks)}")
        self.chunks = tuple(int(c) for c in chunks)
        self.codec = codec

    @abstractmethod
    def recognises(self, path: Path) -> bool:
        """Whether ``path`` looks like a cache of this format (cheap, reads no data)."""

    @abstractmethod
    def open(self, path: Path) -> CacheReader:
        """Open a complete cache; raise :class:`DataError` if it is incomplete or unsafe."""

    @abstractmethod
    def writer(self, path: Path) -> CacheWriter:
        """Start (or continue) building a cache at ``path``; it is incomplete until commit."""


def completion_record(
    cases: list[str], store: str, preprocessing: dict[str, Any]
) -> dict[str, Any]:
    import datetime

    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "store": store,
        "cases": sorted(cases),
        "preprocessing": preprocessing,
        "completed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def check_record(record: Any, where: Path) -> dict[str, Any]:
    if (
        not isinstance(record, dict)
        or record.get("format") != CACHE_FORMAT
        or not isinstance(record.get("cases"), list)
    ):
        raise DataError(f"{where}: completion record is malformed: {str(record)[:200]}")
    if record.get("version") not in READABLE_VERSIONS:
        raise DataError(
            f"{where}: cache version {record.get('version')} is not the supported "
            f"{CACHE_VERSION}; rebuild it with duoseg cache build"
        )
    return record
