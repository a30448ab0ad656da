"""Data-pipeline figures: cache build MB/s, patch reads/s per store and sampler,
sampling memory and first-patch latency on 20 cases of 512x512x256, TorchIO peer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache

from benchmarks.data_fixtures import BIG, big_cache, big_source

HERE = Path(__file__).parent
PATCH = 64


@pytest.fixture(scope="module")
def zarr_cache(registry: Registry) -> Path:
    return big_cache(registry, "zarr")


@pytest.fixture(scope="module")
def hdf5_cache(registry: Registry) -> Path:
    return big_cache(registry, "hdf5", cases=2)


def test_cache_build_throughput(benchmark, registry: Registry, tmp_path: Path) -> None:
    """One 512x512x256 case from raw NIfTI into a fresh Zarr cache."""
    source = tmp_path / "src"
    source.mkdir()
    for path in sorted(big_source().glob("*_1001_*.nii")):
        (source / path.name).symlink_to(path)
    megabytes = sum(p.stat().st_size for p in source.iterdir()) / 2**20
    counter = iter(range(100))

    def build() -> None:
        importer = registry.build("importer", "mmwhs")
        store = registry.build("store", "zarr")
        build_cache(source, tmp_path / f"c{next(counter)}.zarr", importer=importer, store=store)

    benchmark.pedantic(build, rounds=2, iterations=1)
    benchmark.extra_info.update(
        source_mib=megabytes, mib_per_s=megabytes / benchmark.stats.stats.min
    )


@pytest.mark.parametrize("store", ["zarr", "hdf5"])
def test_random_patch_pair_reads(benchmark, registry: Registry, request, store: str) -> None:
    """Random 64^3 image+label pairs, one process (the target: >= 300 pairs/s for Zarr)."""
    path = request.getfixturevalue(f"{store}_cache")
    cache = open_cache(path, registry)
    cases = [cache.case(c) for c in cache.cases()[:2]]
    rng = np.random.default_rng(0)
    pairs = 200

    def read() -> None:
        for _ in range(pairs):
            case = cases[int(rng.integers(len(cases)))]
            z, y, x = (int(rng.integers(n - PATCH)) for n in case.meta.shape)
            box = (slice(z, z + PATCH), slice(y, y + PATCH), slice(x, x + PATCH))
            case.image[box]
            case.label[box]

    benchmark.pedantic(read, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(pairs_per_s=pairs / benchmark.stats.stats.min)


@pytest.mark.parametrize(
    "sampler_name", ["class_balanced", "uniform", "axial_stack", "whole_coarse"]
)
def test_sampler_throughput(
    benchmark, registry: Registry, zarr_cache: Path, sampler_name: str
) -> None:
    params = {"sizes": [PATCH]} if "sizes" in registry.parameters("sampler", sampler_name) else {}
    sampler = registry.build("sampler", sampler_name, **params)
    cache = open_cache(zarr_cache, registry)
    cases = [cache.case(c) for c in cache.cases()]
    draws = 100
    counter = iter(range(10**6))

    def draw() -> None:
        for _ in range(draws):
            index = next(counter)
            sampler.sample(cases[index % len(cases)], epoch=0, index=index)

    benchmark.pedantic(draw, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(samples_per_s=draws / benchmark.stats.stats.min)


def _run_json(*command: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sampling_memory_and_first_patch_latency(benchmark, zarr_cache: Path) -> None:
    """20 cases of 512x512x256: peak RSS < 1 GiB, first patch of a case < 0.1 s."""
    figures = benchmark.pedantic(
        _run_json, args=(str(HERE / "sampling_memory.py"), str(zarr_cache)), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)
    assert figures["cases"] == 20


@pytest.mark.skipif(importlib.util.find_spec("torchio") is None, reason="peers extra not installed")
def test_peer_torchio_label_sampler(benchmark) -> None:
    source = big_source()
    label, image = (str(next(source.glob(f"*_1001_{k}.nii"))) for k in ("label", "image"))
    start = time.perf_counter()
    figures = benchmark.pedantic(
        _run_json,
        args=(str(HERE / "peer_torchio_sampler.py"), label, image),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(figures, volume=list(BIG), wall_s=time.perf_counter() - start)
