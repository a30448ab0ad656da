"""Fixtures shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from duoseg.phantoms import phantom_cache


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    return phantom_cache(root, cases=4, size=(48, 40, 32), seed=7, chunks=(8, 16, 16))


TWO_STAGE = """
seed = 2
[networks.net1]
component = "net1"
params = { base_width = 4, norm = "instance" }
[networks.net2]
component = "net2"
params = { base_width = 4, k = 3, norm = "instance" }
[schedule]
component = "wang2018"
params = { iterations = [2, 1, 1, 1], subvolume_sizes = [16], k = 3, stack_crop = [32, 32] }
"""
BASELINE = """
seed = 2
[networks.unet3d]
component = "unet3d"
params = { base_width = 4 }
[schedule]
component = "baseline_unet3d"
params = { iterations = 2, subvolume_sizes = [16] }
"""


def _run(tmp: Path, cache: Path, text: str, name: str) -> Path:
    from duoseg.apps.cli import main

    config = tmp / f"{name}.toml"
    config.write_text(text)
    assert main(["train", str(config), "--cache", str(cache), "--out", str(tmp / name)]) == 0
    return tmp / name


@pytest.fixture(scope="session")
def two_stage_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("runs"), cache, TWO_STAGE, "two_stage")


@pytest.fixture(scope="session")
def guided_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Net2 guided by all of Net1's class probabilities."""
    text = TWO_STAGE.replace("k = 3, norm", 'k = 3, guidance = "probabilities", norm')
    return _run(tmp_path_factory.mktemp("runs"), cache, text, "guided")


@pytest.fixture(scope="session")
def baseline_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("runs"), cache, BASELINE, "baseline")


SLIDING_WINDOW = """
seed = 2
[networks.unet3d]
component = "unet3d"
params = { base_width = 4 }
[schedule]
component = "fullres_unet3d"
params = { iterations = 2, subvolume_sizes = [16, 24] }
[method]
component = "sliding_window"
params = { window = [16, 24, 24], batch = 2 }
"""


@pytest.fixture(scope="session")
def sliding_window_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("runs"), cache, SLIDING_WINDOW, "sliding_window")
