"""Fixtures shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from duoseg.core import load_plugins
from duoseg.core.cache_build import build_cache
from duoseg.core.phantom import write_phantoms


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_phantoms(root / "src", cases=4, size=(48, 40, 32), seed=7)
    registry = load_plugins(entry_points=False)
    build_cache(root / "src", root / "cache.zarr", importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr", chunks=(8, 16, 16)))  # fmt: skip
    return root / "cache.zarr"
