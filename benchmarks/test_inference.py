"""Full-resolution inference on CPU: memory against depth, the MONAI peer, the baseline's
B-spline resampling. Each run is its own process (peak RSS = VmHWM)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from duoseg.core import Registry

from benchmarks.data_fixtures import depth_cache

HERE = Path(__file__).parent


def run(mode: str, cache: Path, out: Path, budget: float = 256.0, *flags: str) -> dict[str, object]:
    command = [sys.executable, str(HERE / "inference_run.py"), mode, str(cache), str(out),
               "--budget", str(budget), *flags]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("depth", [64, 128, 256])
def test_memory_does_not_grow_with_depth(benchmark, registry: Registry, tmp_path, depth) -> None:
    """Zarr in, Zarr out, 512 x 512 x depth; target: peak RSS(256) <= 1.15 x peak RSS(64)
    (512 slices: docs/inference.md; drop here to keep the suite under 10 minutes)."""
    cache = depth_cache(registry, depth)
    figures = benchmark.pedantic(
        run, args=("two_stage", cache, tmp_path / "out.zarr"), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)


@pytest.mark.parametrize("depth", [64, 512])
def test_nifti_output_memory_does_not_grow_with_depth(
    benchmark, registry: Registry, tmp_path, depth
) -> None:
    """Zarr in, NIfTI (.nii.gz in the source grid) out, 512 x 512 x depth; target:
    peak RSS(512) <= 1.15 x peak RSS(64): slabs go through a memory-mapped scratch file."""
    cache = depth_cache(registry, depth)
    figures = benchmark.pedantic(
        run, args=("two_stage", cache, tmp_path / "out", 256.0, "--nifti"), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)


@pytest.mark.parametrize("depth", [128, 512])
def test_sliding_window_memory_does_not_grow_with_depth(
    benchmark, registry: Registry, tmp_path, depth
) -> None:
    """unet3d (width 16) in 96^3 Gaussian windows, overlap 0.25 (as MONAI's peer below),
    streamed down z, 512 x 512 x depth; target: peak RSS(512) <= 1.15 x peak RSS(128).
    (Volumes shallower than a window hold fewer planes, so they start at 128.)"""
    cache = depth_cache(registry, depth)
    figures = benchmark.pedantic(
        run, args=("sliding_window", cache, tmp_path / "out.zarr"), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)


@pytest.mark.parametrize("mode", ["segment", "predict_file"])
@pytest.mark.parametrize("depth", [64, 512])
def test_segment_memory_against_depth(benchmark, registry: Registry, tmp_path, depth,
                                      mode) -> None:  # fmt: skip
    """``duoseg.load(MODEL.zip).segment(NIfTI file)`` (labels returned in memory) beside
    ``.predict(NIfTI file, folder)`` on the same 512 x 512 x depth file. A whole volume
    comes in and (for segment) goes out, so neither is flat in the depth; the slabs are.
    Target: segment's working memory <= 1.15 x predict's at each depth (its only extra
    is the returned labels, 2 bytes per voxel, and its in-memory class indices, 1)."""
    cache = depth_cache(registry, depth)
    figures = benchmark.pedantic(run, args=(mode, cache, tmp_path / "out"), rounds=1, iterations=1)
    benchmark.extra_info.update(figures)


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="peers extra not installed")
def test_peer_monai_sliding_window(benchmark, registry: Registry, tmp_path) -> None:
    """MONAI's 3D U-Net (16-128, roi 96^3, overlap 0.25, gaussian) on 512 x 512 x 256."""
    cache = depth_cache(registry, 256)
    figures = benchmark.pedantic(
        run, args=("monai", cache, tmp_path / "unused"), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)


def test_baseline_resampling_in_slabs(benchmark, registry: Registry, tmp_path) -> None:
    """unet3d at 2 mm, probabilities back to 512 x 512 x 128 with order-2 B-splines per slab."""
    cache = depth_cache(registry, 128)
    figures = benchmark.pedantic(
        run, args=("baseline", cache, tmp_path / "out.zarr"), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)
