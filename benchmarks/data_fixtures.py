"""Benchmark-sized data: 20 phantom CT cases of 512x512x256, built once and kept.

They live in ``$DUOSEG_BENCH_DATA`` (default ``.benchmarks/data`` in the checkout):
generating and caching them takes about ten minutes on 2 cores, so later runs
reuse them. A cache is only reused when it opens as complete.
"""

from __future__ import annotations

import os
from pathlib import Path

from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.errors import DataError
from duoseg.phantoms import phantom_cache, write_phantoms

from benchmarks.training_setup import MMWHS_DATA

BIG = (512, 512, 256)
BIG_CASES = 20


def data_root() -> Path:
    default = Path(__file__).resolve().parents[1] / ".benchmarks" / "data"
    return Path(os.environ.get("DUOSEG_BENCH_DATA", default))


def big_source(cases: int = BIG_CASES) -> Path:
    source = data_root() / "big-src"
    present = len(list(source.glob("*_label.nii")))
    if present < cases:
        write_phantoms(source, cases=cases, size=BIG, seed=2026, compress=False, progress=True)
    return source


def big_cache(registry: Registry, store: str = "zarr", cases: int = BIG_CASES) -> Path:
    """A complete cache of the first ``cases`` big phantoms in ``store`` format."""
    suffix = {"zarr": "zarr", "hdf5": "h5"}[store]
    target = data_root() / f"big-{cases}.{suffix}"
    if _complete(target, registry):
        return target
    source = big_source()
    if cases < BIG_CASES:
        subset = data_root() / f"big-src-{cases}"
        subset.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.nii"))[: 2 * cases]:
            link = subset / path.name
            if not link.exists():
                link.symlink_to(path)
        source = subset
    build_cache(source, target, importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", store), progress=True,
                levels=MMWHS_DATA.levels)  # fmt: skip
    return target


def depth_cache(registry: Registry, depth: int, seed: int = 77) -> Path:
    """One 512 x 512 x ``depth`` phantom; one seed for all depths, so the anatomy (and the
    in-plane ROI) is the same and only the number of slices changes."""
    root = data_root() / f"depth-{depth}"
    if _complete(root / "cache.zarr", registry):
        return root / "cache.zarr"
    return phantom_cache(root, cases=1, size=(512, 512, depth), seed=seed,
                         levels=MMWHS_DATA.targets())  # fmt: skip


def _complete(target: Path, registry: Registry) -> bool:
    """Whether ``target`` is a cache that opens as complete with the levels the benchmarks'
    methods read (so it can be reused; an older one is rebuilt, adding the 2 mm level)."""
    try:
        with open_cache(target, registry) as cache:
            return cache.preprocessing.levels == MMWHS_DATA.levels
    except DataError:
        return False
