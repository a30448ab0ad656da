"""Shared fixtures (the conformance suites parametrise themselves: duoseg.testing)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from duoseg.core import Registry, load_plugins
from duoseg.phantoms import phantom_cache

from tests.runs import BASELINE, SLIDING_WINDOW, TWO_STAGE, train_run

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
# A test that needs a trained run waits for one (minutes on 2 cores): slow, left out of
# the fast loop (`-m "not slow"`), run by CI.
TRAINED_RUNS = {"two_stage_run", "guided_run", "baseline_run", "sliding_window_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINED_RUNS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_plugins()


@pytest.fixture
def install_fixture_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Put one of tests/fixtures/plugins/* on sys.path as an installed distribution."""
    before = set(sys.modules)

    def install(name: str) -> None:
        monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS / name))

    yield install
    for module in set(sys.modules) - before:
        if module.startswith("duoseg_"):
            del sys.modules[module]


# Trained once per session on a small phantom cache: the method, trainer, inference and
# CLI tests share them.
@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    return phantom_cache(root, cases=4, size=(48, 40, 32), seed=7, chunks=(8, 16, 16),
                         levels={"coarse": 3.0, "baseline": 2.0})  # fmt: skip


@pytest.fixture(scope="session")
def two_stage_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs"), cache, TWO_STAGE, "two_stage")


@pytest.fixture(scope="session")
def guided_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Net2 guided by all of Net1's class probabilities."""
    text = TWO_STAGE.replace("k = 3, norm", 'k = 3, guidance = "probabilities", norm')
    return train_run(tmp_path_factory.mktemp("runs"), cache, text, "guided")


@pytest.fixture(scope="session")
def baseline_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs"), cache, BASELINE, "baseline")


@pytest.fixture(scope="session")
def sliding_window_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs"), cache, SLIDING_WINDOW, "sliding_window")
