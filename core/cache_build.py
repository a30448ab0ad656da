"""Building a cache from a source folder: import, normalise, downsample, index, write.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from .cache import CaseArrays, CaseMeta, VolumeStore, array_digest, completion_record
from .importer import DataError, ImportedCase, Importer, file_checksum

DEFAULT_COARSE_SPACING = 3.0
DEFAULT_PERCENTILES = (0.5, 99.5)


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


def normalise(
    image: NDArray[np.float32], percentiles: tuple[float, float]
) -> tuple[NDArray[np.float16], dict[str, float]]:
    """Clip to the given percentiles and rescale linearly to [-1, 1] (the paper's range)."""
    low, high = (float(v) for v in np.percentile(image, percentiles))
    if high <= low:
        high = low + 1.0
    scaled = (np.clip(image, low, high) - low) * (2.0 / (high - low)) - 1.0
    return scaled.astype(np.float16), {"low": low, "high": high,
                                        "percentile_low": percentiles[0],
                                        "percentile_high": percentiles[1]}  # fmt: skip


def coarse_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: float
) -> tuple[int, int, int]:
    z, y, x = (max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True))
    return (z, y, x)


def downsample_image(
    image: NDArray[np.floating], shape: tuple[int, int, int]
) -> NDArray[np.float16]:
    """Area (box) averaging to ``shape``: anti-aliased, as the coarse grid needs."""
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool3d(tensor, shape)[0, 0].numpy().astype(np.float16)


def downsample_label(
    label: NDArray[np.uint8], shape: tuple[int, int, int], classes: int
) -> NDArray[np.uint8]:
    """Majority vote: the class covering the largest part of each coarse voxel."""
    best = torch.zeros(shape)
    result = torch.zeros(shape, dtype=torch.uint8)
    source = torch.from_numpy(label)
    for c in range(classes):
        share = F.adaptive_avg_pool3d((source == c).float()[None, None], shape)[0, 0]
        better = share > best
        best = torch.where(better, share, best)
        result[better] = c
    return result.numpy()


def class_counts(
    label: NDArray[np.uint8], block: tuple[int, ...], classes: int
) -> NDArray[np.int64]:
    """Voxel count per block of ``block`` shape and per class: (bz, by, bx, classes)."""
    grid = [-(-n // b) for n, b in zip(label.shape, block, strict=True)]
    counts = np.zeros((*grid, classes), np.int64)
    by_index = (np.arange(label.shape[1]) // block[1])[:, None] * grid[2]
    bx_index = (np.arange(label.shape[2]) // block[2])[None, :]
    block_id = (by_index + bx_index) * classes  # (y, x) -> first bin of its block
    for bz in range(grid[0]):
        slab = label[bz * block[0] : (bz + 1) * block[0]]
        bins = np.bincount((block_id[None] + slab).ravel(), minlength=grid[1] * grid[2] * classes)
        counts[bz] = bins.reshape(grid[1], grid[2], classes)
    return counts


def source_checksums(image: Path, label: Path | None) -> dict[str, str]:
    return {"image": file_checksum(image), **({"label": file_checksum(label)} if label else {})}


def prepare_case(
    case: ImportedCase,
    *,
    checksums: dict[str, str],
    chunks: tuple[int, ...],
    coarse_spacing: float,
    percentiles: tuple[float, float],
) -> CaseArrays:
    """Everything the cache stores for one imported case."""
    image, normalisation = normalise(case.image, percentiles)
    small = coarse_shape(image.shape, case.spacing, coarse_spacing)
    coarse = downsample_image(image, small)
    classes = len(case.class_names)
    label = coarse_label = None
    counts = np.zeros((0, 0, 0, classes), np.int64)
    if case.label is not None:
        label = case.label
        coarse_label = downsample_label(label, small, classes)
        counts = class_counts(label, chunks, classes)
    extent = [n * s for n, s in zip(image.shape, case.spacing, strict=True)]
    arrays = {"image": image, "label": label, "coarse_image": coarse, "coarse_label": coarse_label}
    meta = CaseMeta(
        case_id=case.case_id,
        shape=(image.shape[0], image.shape[1], image.shape[2]),
        spacing=case.spacing,
        coarse_shape=small,
        coarse_spacing=(extent[0] / small[0], extent[1] / small[1], extent[2] / small[2]),
        canonical_affine=case.canonical_affine.tolist(),
        source_affine=case.source_affine.tolist(),
        source_shape=case.source_shape,
        class_names=case.class_names,
        label_values=case.label_values,
        normalisation=normalisation,
        checksums=checksums,
        has_label=label is not None,
        coarse_target=coarse_spacing,
        digests={k: array_digest(v, chunks) for k, v in arrays.items() if v is not None},
    )
    return CaseArrays(meta, image, label, coarse, coarse_label, counts)


def build_cache(
    source: str | Path,
    target: str | Path,
    *,
    importer: Importer,
    store: VolumeStore,
    coarse_spacing: float = DEFAULT_COARSE_SPACING,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    progress: bool = False,
) -> BuildReport:
    """Build or update the cache at ``target`` from the cases under ``source``."""
    from tqdm import tqdm

    if not coarse_spacing > 0:
        raise DataError(f"coarse_spacing must be > 0 mm, got {coarse_spacing}")
    source, target = Path(source), Path(target)
    start = time.perf_counter()
    report = BuildReport()
    pairs = importer.discover(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(target):
        writer = store.writer(target)
        try:
            cached = writer.case_checksums()
            for pair in tqdm(pairs, desc=f"cache {target.name}", unit="case", disable=not progress):
                checksums = source_checksums(pair.image, pair.label)
                if cached.get(pair.case_id) == checksums:
                    report.skipped.append(pair.case_id)
                    continue
                case = importer.load(pair)
                arrays = prepare_case(
                    case, checksums=checksums, chunks=store.chunks,
                    coarse_spacing=coarse_spacing, percentiles=percentiles,
                )  # fmt: skip
                writer.write_case(arrays)
                report.written.append(pair.case_id)
                report.voxels += case.image.size
            wanted = {p.case_id for p in pairs}
            for case_id in sorted(set(cached) - wanted):
                writer.drop_case(case_id)
                report.dropped.append(case_id)
            writer.commit(completion_record(sorted(wanted), store.name))
        except BaseException:
            writer.abort()
            raise
    report.seconds = time.perf_counter() - start
    return report


def describe_report(report: BuildReport) -> str:
    return json.dumps(
        {
            "written": len(report.written),
            "skipped": len(report.skipped),
            "dropped": len(report.dropped),
            "seconds": round(report.seconds, 2),
        }
    )
