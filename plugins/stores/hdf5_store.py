"""The ``hdf5`` store: one HDF5 file with the cache's layout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from duoseg.core.errors import DataError
from duoseg.core.fs import write_atomically
from duoseg.core.interfaces.store import (
    CACHE_FORMAT,
    CacheCase,
    CacheReader,
    CacheWriter,
    CaseArrays,
    ChunkedArray,
    VolumeStore,
    array_chunks,
    check_record,
)
from duoseg.core.records.case import CaseMeta, check_case_id
from numpy.typing import NDArray


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
        for name, data in arrays.named().items():
            chunks = self.store.chunks if data.ndim == 3 else data.shape
            group.create_dataset(name, data=data, chunks=array_chunks(data.shape, chunks),
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
