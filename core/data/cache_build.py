"""Building a cache from a source folder: import, prepare (core/preprocessing.py), write.

A build takes an exclusive lock beside the target, so a second build of the same
cache exits naming the holder. It is incremental - a case whose source checksums
match the cached ones is skipped - and it writes the completion record last.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from duoseg.core.data.preprocessing import prepare_case
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import Importer, SourcePair, file_checksum, image_checksum
from duoseg.core.interfaces.store import CaseArrays, VolumeStore, array_digest, completion_record
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.preprocessing import (
    DEFAULT_LEVELS,
    DEFAULT_PERCENTILES,
    Level,
    Preprocessing,
    class_table,
)


@dataclass
class BuildReport:
    """What a build did; ``bytes_read`` counts source voxels imported (float32)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    voxels: int = 0


@contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s lock file, or fail naming its holder."""
    lock_path = target.with_name(target.name + ".lock")
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole build
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DataError(f"{target}: another build holds the cache lock: {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def source_checksums(pair: SourcePair) -> dict[str, str]:
    label = {"label": file_checksum(pair.label)} if pair.label else {}
    return {"image": image_checksum(pair), **label}


def build_cache(
    source: str | Path,
    target: str | Path,
    *,
    importer: Importer,
    store: VolumeStore,
    levels: Sequence[Level] = DEFAULT_LEVELS,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    progress: bool = False,
) -> BuildReport:
    """Build or update the cache at ``target`` from the cases under ``source``.

    A cached case is kept when its source files and the preprocessing it was made with
    are unchanged; otherwise it is prepared again, so one cache never mixes two ways
    of preparing data (adding a level prepares every case again). ``levels`` are the
    resampled grids each case gets; the ``coarse`` level must be among them. The
    completion record carries the preprocessing record."""
    from tqdm import tqdm

    preprocessing = Preprocessing(percentiles=percentiles, levels=tuple(levels))
    source, target = Path(source), Path(target)
    start = time.perf_counter()
    report = BuildReport()
    pairs = importer.discover(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(target):
        writer = store.writer(target)
        try:
            cached = writer.case_metas()
            metas: list[CaseMeta] = []
            for pair in tqdm(pairs, desc=f"cache {target.name}", unit="case", disable=not progress):
                checksums = {**source_checksums(pair), "plan": preprocessing.digest()}
                previous = cached.get(pair.case_id)
                if previous is not None and previous.checksums == checksums:
                    report.skipped.append(pair.case_id)
                    metas.append(previous)
                    continue
                case = importer.load(pair)
                arrays = _with_digests(
                    prepare_case(case, preprocessing, checksums=checksums, chunks=store.chunks),
                    store.chunks,
                )
                writer.write_case(arrays)
                metas.append(arrays.meta)
                report.written.append(pair.case_id)
                report.voxels += case.image.size
            wanted = {p.case_id for p in pairs}
            for case_id in sorted(set(cached) - wanted):
                writer.drop_case(case_id)
                report.dropped.append(case_id)
            record = _record_of(preprocessing, metas, target)
            writer.commit(completion_record(sorted(wanted), store.name, record.as_dict()))
        except BaseException:
            writer.abort()
            raise
    report.seconds = time.perf_counter() - start
    return report


def _with_digests(arrays: CaseArrays, chunks: tuple[int, ...]) -> CaseArrays:
    """Digests of the volumes (the class index is derived from the label)."""
    digests = {k: array_digest(v, chunks) for k, v in arrays.volumes().items()}
    return replace(arrays, meta=replace(arrays.meta, digests=digests))


def _record_of(preprocessing: Preprocessing, metas: list[CaseMeta], target: Path) -> Preprocessing:
    """The record with the cases' classes, which every case must share."""
    first = metas[0]
    for meta in metas[1:]:
        if (meta.class_names, meta.label_values) != (first.class_names, first.label_values):
            raise DataError(
                f"{target}: case {meta.case_id} has classes "
                f"{class_table(meta.class_names, meta.label_values)} but case {first.case_id} "
                f"has {class_table(first.class_names, first.label_values)}; one cache holds "
                "one label set"
            )
    return replace(preprocessing, class_names=first.class_names, label_values=first.label_values)


def describe_report(report: BuildReport) -> str:
    return json.dumps(
        {
            "written": len(report.written),
            "skipped": len(report.skipped),
            "dropped": len(report.dropped),
            "seconds": round(report.seconds, 2),
        }
    )
