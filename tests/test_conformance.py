"""Every registered component of every kind keeps its kind's conformance contract.

"Registered" is the current environment: duoseg's built-ins and every installed plugin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from duoseg.core.records.config import ComponentRef
from duoseg.plugins.importers import MMWHS_LABELS
from duoseg.testing import (
    AugmentationConformance,
    ImporterConformance,
    LossConformance,
    MethodConformance,
    MethodRecipe,
    MetricConformance,
    NetworkConformance,
    SamplerConformance,
    ScheduleConformance,
    StoreConformance,
    WriterConformance,
    every_registered,
)


class TestEveryNetwork(NetworkConformance):
    name = every_registered("network")


class TestEveryLoss(LossConformance):
    name = every_registered("loss")


class TestEverySampler(SamplerConformance):
    name = every_registered("sampler")


class TestEverySchedule(ScheduleConformance):
    name = every_registered("schedule")


class TestEveryStore(StoreConformance):
    name = every_registered("store")

    def remove_chunk(
        self, component_name: str, path: Path, case_id: str, array: str, index: tuple[int, ...]
    ) -> None:
        """The built-in formats; an installed plugin's store skips this one test here."""
        if component_name == "zarr":  # one file per chunk: <array>/c/<z>/<y>/<x>
            (path / "cases" / case_id / array / "c").joinpath(*map(str, index)).unlink()
        elif component_name == "hdf5":  # rewrite the dataset leaving the chunk unallocated
            with h5py.File(path, "r+") as handle:
                group = handle["cases"][case_id]
                data, chunks = group[array][...], group[array].chunks
                del group[array]
                dataset = group.create_dataset(array, data.shape, data.dtype, chunks=chunks)
                grid = [-(-n // c) for n, c in zip(data.shape, chunks, strict=True)]
                for chunk in np.ndindex(*grid):
                    if chunk != index:
                        box = tuple(
                            slice(i * c, (i + 1) * c) for i, c in zip(chunk, chunks, strict=True)
                        )
                        dataset[box] = data[box]
        else:
            super().remove_chunk(component_name, path, case_id, array, index)


class TestEveryImporter(ImporterConformance):
    """The NIfTI importers on the suite's NIfTI source; ``dicom`` runs the same suite on
    DICOM series (tests/plugins/test_dicom.py)."""

    name = every_registered(
        "importer", params={"nifti": {"labels": MMWHS_LABELS}}, exclude=("dicom",)
    )


class TestEveryAugmentation(AugmentationConformance):
    name = every_registered("augmentation")


class TestEveryMetric(MetricConformance):
    name = every_registered("metric")


class TestEveryWriter(WriterConformance):
    name = every_registered("writer")


class TestEveryMethod(MethodConformance):
    name = every_registered("method")
    recipes = {
        "two_stage": MethodRecipe(
            {"net1": ComponentRef("net1", {"base_width": 4, "norm": "instance"}),
             "net2": ComponentRef("net2", {"base_width": 4, "k": 3, "norm": "instance"})},
            ComponentRef("wang2018", {"iterations": 1, "subvolume_sizes": [16], "k": 3,
                                      "stack_crop": [32, 32]}),
        ),
        "resampled": MethodRecipe(
            {"unet3d": ComponentRef("unet3d", {"base_width": 4})},
            ComponentRef("baseline_unet3d", {"iterations": 1, "subvolume_sizes": [16]}),
        ),
        "sliding_window": MethodRecipe(
            {"unet3d": ComponentRef("unet3d", {"base_width": 4})},
            ComponentRef("fullres_unet3d", {"iterations": 1, "subvolume_sizes": [16]}),
            {"window": [16, 24, 24]},
        ),
    }  # fmt: skip


THIRD_PARTY = """
from duoseg.testing import MetricConformance, StoreConformance

class TestDice(MetricConformance):
    name = "dice"

class TestZarr(StoreConformance):
    name = "zarr"

def test_the_session_registry(duoseg_registry):
    assert "dice" in duoseg_registry.names("metric")
"""


@pytest.mark.slow
def test_a_project_without_a_conftest_gets_the_fixtures_and_the_marker(tmp_path: Path) -> None:
    (tmp_path / "test_third_party.py").write_text(THIRD_PARTY)
    select = "duoseg_conformance(kind='metric') or not duoseg_conformance"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers",
         "-m", select, "test_third_party.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8 passed, 6 deselected" in result.stdout, result.stdout[-3000:]


@pytest.mark.slow
def test_importing_the_pytest_plugin_loads_no_plugin_and_builds_no_registry() -> None:
    code = (
        "import sys, duoseg.core.registry as r\n"
        "r.Registry.__init__ = lambda self: sys.exit('a registry was built')\n"
        "import duoseg.testing.plugin\n"
        "assert not [m for m in sys.modules if m.startswith('duoseg.plugins')], 'plugins'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
