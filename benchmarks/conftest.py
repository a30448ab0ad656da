"""Shared fixtures of the benchmark suite.

Run with ``pytest benchmarks --benchmark-only --benchmark-json=out.json``; every
benchmark records its figures (FLOPs, voxels/s, memory) in ``extra_info`` and
``python benchmarks/summarize.py out.json`` prints them as tables.
"""

from __future__ import annotations

import time

import pytest
import torch
from duoseg.core import Registry, load_plugins


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_plugins(entry_points=False)


@pytest.fixture(scope="session")
def matmul_gflops() -> float:
    """The machine's float32 matmul rate, the yardstick for achieved GFLOP/s."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * 2048**3 / best / 1e9
