"""Concurrent builds of one cache, and DataLoader workers over both stores."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.errors import DataError

from .conftest import DUOSEG, REPEATS, run

pytestmark = pytest.mark.slow


def test_two_concurrent_builds_never_corrupt_the_cache(source: Path, tmp_path: Path) -> None:
    registry = load_plugins()
    refused = 0
    for attempt in range(REPEATS):
        target = tmp_path / f"cache-{attempt}.zarr"
        lock = target.with_name(target.name + ".lock")
        command = [DUOSEG, "cache", "build", str(source), str(target)]
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)  # fmt: skip
        while first.poll() is None and f"pid {first.pid} " not in _text(lock):
            time.sleep(0.005)
        try:  # a second build while the first holds the lock
            build_cache(source, target, importer=registry.build("importer", "mmwhs"),
                        store=registry.build("store", "zarr"))  # fmt: skip
        except DataError as exc:
            assert f"another build holds the cache lock: pid {first.pid} on " in str(exc)
            refused += 1
        assert first.wait() == 0, first.stderr.read()  # type: ignore[union-attr]
        verify = run(["cache", "verify", str(target)])
        assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"concurrent builds: {refused} of {REPEATS} second builds met the lock")
    assert refused >= 1


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("store", ["zarr", "hdf5"])
def test_four_workers_for_three_epochs_read_what_one_process_reads(
    source: Path, tmp_path: Path, store: str
) -> None:
    registry = load_plugins()
    target = tmp_path / f"cache.{'zarr' if store == 'zarr' else 'h5'}"
    build_cache(source, target, importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", store))  # fmt: skip
    sampler = registry.build("sampler", "class_balanced", sizes=[16, 24], batch_size=2)
    for epoch in range(3):
        dataset = SampleDataset(target, sampler, length=48, epoch=epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=4,
                                             multiprocessing_context="fork")  # fmt: skip
        single = SampleDataset(target, sampler, length=48, epoch=epoch)
        for step, batch in enumerate(loader):
            for item in range(2):
                expected = single[step * 2 + item]
                assert batch["case_id"][item] == expected["case_id"]
                for key in ("image", "label", "origin"):
                    assert torch.equal(batch[key][item], expected[key]), (epoch, step, key)
    with open_cache(target, registry) as reader:  # and the cache is untouched
        assert reader.verify() == []
        assert np.isfinite(reader.case(reader.cases()[0]).image[...]).all()
