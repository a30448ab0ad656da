"""The cache stores: ``zarr`` (default, Zarr v3 directory) and ``hdf5`` (one file).

Both hold the layout of :mod:`duoseg.core.cache`::

    cases/<case_id>/{image, label, coarse_image, coarse_label, class_counts}
    case metadata (JSON) on each case group; completion record written last

Zarr is written with zarr-python and read straight from its chunk files (the
benchmark in docs/data.md: 6-8x faster than zarr-python's reader for small random
patches), which also lets a missing or truncated chunk raise instead of reading as
the fill value. Only uncompressed chunks or Blosc are accepted; any other codec,
dtype or storage transformer is refused before data are read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
import zarr
from duoseg.core import Component, hookimpl
from duoseg.core.cache import (
    CACHE_FORMAT,
    CacheCase,
    CacheReader,
    CacheWriter,
    CaseArrays,
    CaseMeta,
    ChunkedArray,
    VolumeStore,
    check_case_id,
    check_record,
)
from duoseg.core.errors import DataError
from duoseg.core.weights import write_atomically
from duoseg.core.zarr_arrays import ZarrArray, read_json
from numpy.typing import NDArray

COMPLETION_FILE: Final = "duoseg-complete.json"
CODECS: Final = ("none", "lz4", "zstd")


def _array_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    # Small arrays (the coarse level, class counts) get one chunk per axis at most.
    return tuple(min(c, n) for c, n in zip(chunks, shape, strict=False)) + tuple(
        shape[len(chunks) :]
    )


def _arrays(case: CaseArrays) -> dict[str, NDArray[Any]]:
    named = {"image": case.image, "label": case.label, "coarse_image": case.coarse_image,
             "coarse_label": case.coarse_label, "class_counts": case.class_counts}  # fmt: skip
    return {k: v for k, v in named.items() if v is not None}


# --------------------------------------------------------------------------- zarr


class ZarrCacheReader(CacheReader):
    def _case(self, case_id: str) -> CacheCase:
        directory = self.path / "cases" / check_case_id(case_id, self.path)
        where = f"cache {self.path}, case {case_id}"
        group = read_json(directory / "zarr.json", where)
        meta = CaseMeta.from_json(
            json.dumps(group.get("attributes", {}).get("duoseg", {})), where=where
        )

        def array(name: str) -> ZarrArray:
            return ZarrArray(directory / name, f"{where}, array {name}")

        return CacheCase.from_arrays(meta, array)


class ZarrCacheWriter(CacheWriter):
    def __init__(self, store: ZarrStore, path: Path) -> None:
        self.store, self.path = store, path
        if path.exists() and not store.recognises(path) and any(path.iterdir()):
            raise DataError(f"{path}: exists and is not a duoseg Zarr cache; refusing to write")
        root = zarr.open_group(str(path), mode="a")
        root.attrs["duoseg"] = {"format": CACHE_FORMAT}
        self.cases = path / "cases"
        self.cases.mkdir(exist_ok=True)
        (path / COMPLETION_FILE).unlink(missing_ok=True)
        _fsync_dir(path)
        for leftover in self.cases.glob(".*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def case_metas(self) -> dict[str, CaseMeta]:
        found = {}
        for directory in sorted(p for p in self.cases.iterdir() if not p.name.startswith(".")):
            where = f"cache {self.path}, case {directory.name}"
            group = read_json(directory / "zarr.json", where)
            meta = json.dumps(group.get("attributes", {}).get("duoseg", {}))
            found[directory.name] = CaseMeta.from_json(meta, where=where)
        return found

    def write_case(self, arrays: CaseArrays) -> None:
        case_id = check_case_id(arrays.meta.case_id, self.path)
        partial = self.cases / f".partial-{case_id}-{os.getpid()}"
        group = zarr.open_group(str(partial), mode="w")
        for name, data in _arrays(arrays).items():
            chunks = self.store.chunks if data.ndim == 3 else data.shape
            target = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=_array_chunks(data.shape, chunks),
                compressors=self.store.compressors(), fill_value=0,
                config={"write_empty_chunks": True},
            )  # fmt: skip
            target[...] = data
        group.attrs["duoseg"] = json.loads(arrays.meta.to_json())
        self._replace(partial, self.cases / case_id)

    def _replace(self, partial: Path, final: Path) -> None:
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)

    def drop_case(self, case_id: str) -> None:
        final = self.cases / check_case_id(case_id, self.path)
        old = final.with_name(f".old-{case_id}-{os.getpid()}")
        os.replace(final, old)
        shutil.rmtree(old)

    def commit(self, record: dict[str, Any]) -> None:
        write_atomically(
            self.path / COMPLETION_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1))
        )

    def abort(self) -> None:
        for leftover in self.cases.glob(f".partial-*-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class ZarrStore(VolumeStore):
    """Zarr v3 directory store. ``codec``: ``none`` (default, fastest), ``lz4`` or ``zstd``."""

    name = "zarr"

    def __init__(
        self, *, chunks: tuple[int, int, int] = (16, 128, 128), codec: str = "none"
    ) -> None:
        if codec not in CODECS:
            raise DataError(f"zarr store codec must be one of {CODECS}, got {codec!r}")
        super().__init__(chunks=chunks, codec=codec)

    def compressors(self) -> Any:
        if self.codec == "none":
            return None
        return zarr.codecs.BloscCodec(cname=self.codec, clevel=1, shuffle="shuffle")

    def recognises(self, path: Path) -> bool:
        try:
            meta = json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(meta.get("attributes", {}).get("duoseg", {}).get("format") == CACHE_FORMAT)

    def open(self, path: Path) -> CacheReader:
        record_path = path / COMPLETION_FILE
        if not record_path.exists():
            raise DataError(
                f"{path}: cache is incomplete (no completion record); rerun duoseg cache build"
            )
        record = check_record(read_json(record_path, str(path)), path)
        return ZarrCacheReader(path, record)

    def writer(self, path: Path) -> CacheWriter:
        return ZarrCacheWriter(self, path)


# --------------------------------------------------------------------------- hdf5


class HDF5Array(ChunkedArray):
    """An HDF5 dataset; unallocated chunks (which h5py would read as fill) raise."""

    def __init__(self, dataset: h5py.Dataset, where: str) -> None:
        if dataset.chunks is None:
            raise DataError(f"{where}: dataset is not chunked")
        super().__init__(tuple(dataset.shape), dataset.dtype, tuple(dataset.chunks), where)
        self.dataset = dataset
        self.allocated = {
            tuple(info.chunk_offset)
            for info in map(dataset.id.get_chunk_info, range(dataset.id.get_num_chunks()))
        }

    def _read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        for index in self.chunks_touched(region):
            offset = tuple(i * c for i, c in zip(index, self.chunks, strict=True))
            if offset not in self.allocated:
                raise DataError(f"{self.where}: chunk {index} is missing (never written)")
        try:
            return np.asarray(self.dataset[region])
        except OSError as exc:
            raise DataError(
                f"{self.where}: chunks in {region} are unreadable (truncated file?): {exc}"
            ) from exc


class HDF5CacheReader(CacheReader):
    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        super().__init__(path, record)
        self._file: h5py.File | None = None
        self._pid = -1

    @property
    def file(self) -> h5py.File:
        # h5py handles must not cross fork(): each DataLoader worker reopens the file.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _case(self, case_id: str) -> CacheCase:
        where = f"cache {self.path}, case {case_id}"
        group = self.file.get(f"cases/{check_case_id(case_id, self.path)}")
        if not isinstance(group, h5py.Group):
            raise DataError(f"{where}: case group is missing")
        meta = CaseMeta.from_json(str(group.attrs.get("duoseg", "{}")), where=where)

        def array(name: str) -> HDF5Array:
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise DataError(f"{where}: dataset {name} is missing")
            return HDF5Array(dataset, f"{where}, array {name}")

        return CacheCase.from_arrays(meta, array)

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


def refuse_unsafe_hdf5(handle: h5py.File, path: Path) -> None:
    """Refuse external links, external storage and virtual datasets before any read."""

    def check(name: str, link: Any) -> None:
        if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
            raise DataError(f"{path}: {type(link).__name__} at /{name} is refused")
        obj = handle.get(name)
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            kind = "external storage" if obj.external else "a virtual dataset"
            raise DataError(f"{path}: dataset /{name} uses {kind}; refused")

    def visit(group: h5py.Group, prefix: str) -> None:
        for key in group:
            link = group.get(key, getlink=True)
            name = f"{prefix}{key}"
            check(name, link)
            child = group.get(key)
            if isinstance(child, h5py.Group):
                visit(child, name + "/")

    visit(handle, "")


class HDF5CacheWriter(CacheWriter):
    """Writes a new file beside the target and renames it over the target on commit.

    HDF5 files are not crash-safe while open for writing, so the previous complete
    cache is never modified: unchanged cases are copied into the new file.
    """

    def __init__(self, store: HDF5Store, path: Path) -> None:
        self.store, self.path = store, path
        self.old: h5py.File | None = None
        if path.exists():
            if not store.recognises(path):
                raise DataError(f"{path}: exists and is not a duoseg HDF5 cache; refusing to write")
            try:
                self.old = h5py.File(path, "r")
                refuse_unsafe_hdf5(self.old, path)
            except OSError:
                self.old = None  # an unreadable old cache is rebuilt from scratch
        for leftover in path.parent.glob(f".{path.name}.partial-*"):
            leftover.unlink(missing_ok=True)
        self.partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self.new = h5py.File(self.partial, "w")
        self.new.attrs["duoseg_format"] = CACHE_FORMAT
        self.new.create_group("cases")
        self.kept: set[str] = set()

    def case_metas(self) -> dict[str, CaseMeta]:
        if self.old is None or "cases" not in self.old:
            return {}
        return {
            case_id: CaseMeta.from_json(
                str(group.attrs.get("duoseg", "{}")), where=f"cache {self.path}, case {case_id}"
            )
            for case_id, group in self.old["cases"].items()
        }

    def write_case(self, arrays: CaseArrays) -> None:
        case_id = check_case_id(arrays.meta.case_id, self.path)
        group = self.new["cases"].create_group(case_id)
        for name, data in _arrays(arrays).items():
            chunks = self.store.chunks if data.ndim == 3 else data.shape
            group.create_dataset(name, data=data, chunks=_array_chunks(data.shape, chunks),
                                 **self.store.filters())  # fmt: skip
        group.attrs["duoseg"] = arrays.meta.to_json()
        self.kept.add(case_id)

    def drop_case(self, case_id: str) -> None:
        self.kept.discard(case_id)  # simply not copied into the new file

    def commit(self, record: dict[str, Any]) -> None:
        if self.old is not None:
            for case_id in record["cases"]:
                if case_id not in self.kept and case_id in self.old["cases"]:
                    self.old.copy(self.old["cases"][case_id], self.new["cases"], name=case_id)
        self.new.attrs["duoseg_complete"] = json.dumps(record)
        self.new.flush()
        self.new.close()
        if self.old is not None:
            self.old.close()
        write_atomically(self.path, lambda tmp: os.replace(self.partial, tmp))

    def abort(self) -> None:
        self.new.close()
        if self.old is not None:
            self.old.close()
        self.partial.unlink(missing_ok=True)


class HDF5Store(VolumeStore):
    """One HDF5 file. ``codec``: ``none`` (default) or ``gzip`` (level 1)."""

    name = "hdf5"

    def __init__(
        self, *, chunks: tuple[int, int, int] = (16, 128, 128), codec: str = "none"
    ) -> None:
        if codec not in ("none", "gzip"):
            raise DataError(f"hdf5 store codec must be 'none' or 'gzip', got {codec!r}")
        super().__init__(chunks=chunks, codec=codec)

    def filters(self) -> dict[str, Any]:
        return {"compression": "gzip", "compression_opts": 1} if self.codec == "gzip" else {}

    def recognises(self, path: Path) -> bool:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        try:
            with h5py.File(path, "r") as handle:
                return bool(handle.attrs.get("duoseg_format") == CACHE_FORMAT)
        except OSError:
            return False

    def open(self, path: Path) -> CacheReader:
        try:
            with h5py.File(path, "r") as handle:
                refuse_unsafe_hdf5(handle, path)
                raw = handle.attrs.get("duoseg_complete")
        except OSError as exc:
            raise DataError(f"{path}: HDF5 cache is unreadable: {exc}") from exc
        if raw is None:
            raise DataError(
                f"{path}: cache is incomplete (no completion record); rerun duoseg cache build"
            )
        return HDF5CacheReader(path, check_record(json.loads(str(raw)), path))

    def writer(self, path: Path) -> CacheWriter:
        return HDF5CacheWriter(self, path)


@hookimpl
def duoseg_store() -> list[Component]:
    return [
        Component("zarr", ZarrStore, "Zarr v3 directory cache, read chunk by chunk (default)"),
        Component("hdf5", HDF5Store, "Single-file HDF5 cache"),
    ]
