"""Net1 as the localiser: a tiny run trained on whole-chest phantoms cuts a tile around
the heart of a held-out chest, not the whole volume (docs/whole_scans.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from duoseg.core import load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.records.preprocessing import Level
from duoseg.core.training.trainer import Trainer, config_as_dict
from duoseg.phantoms import PROTOCOLS, write_phantoms

# The CT protocol's whole chest (about 235 x 235 x 160 mm, the patient off-centre) on
# a coarse voxel grid, so that Net1's 6 mm level is 40 x 40 x 27 voxels and trains in
# seconds; the heart's box is about a quarter of the volume.
SIZE = (96, 96, 64)
NET1_ITERATIONS = "[60, 240, 0, 0]"


def _cache(source: Path, target: Path) -> Path:
    registry = load_plugins()
    importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
    build_cache(source, target, importer=importer, store=store, levels=[Level("coarse", 6.0)])
    return target


@pytest.mark.slow
def test_a_tiny_net1_tiles_the_heart_of_a_held_out_chest(tmp_path: Path) -> None:
    write_phantoms(tmp_path / "train", cases=5, size=SIZE, protocol=PROTOCOLS["ct"], seed=5)
    write_phantoms(tmp_path / "test", cases=1, first=5, size=SIZE, protocol=PROTOCOLS["ct"],
                   seed=5)  # fmt: skip
    train, test = (
        _cache(tmp_path / "train", tmp_path / "train.zarr"),
        _cache(tmp_path / "test", tmp_path / "test.zarr"),
    )
    settings = [f'data.cache="{train}"', 'data.validation_cases=["ct_train_1005"]',
                f"schedule.params.iterations={NET1_ITERATIONS}"]  # fmt: skip
    registry = load_plugins()
    with resources.as_file(resources.files("duoseg.apps") / "configs" / "demo_two_stage.toml") as p:
        config = load_config(p, settings)
    run = tmp_path / "run"
    Trainer(config, registry, run, source=str(p), raw_config=config_as_dict(config)).run()

    cache = open_cache(test, registry)
    case = cache.case(cache.cases()[0])
    report = predict_case(load_model(run, registry), case, MemorySink(), Options())
    assert report.roi_fraction < 0.5, report.roi  # the whole volume would be 1.0
    assert report.roi_recall is not None
    assert min(report.roi_recall.values()) >= 0.99, report.roi_recall
