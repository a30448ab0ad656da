"""Shared fixtures (the conformance suites parametrise themselves: duoseg.testing)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from duoseg.core import Registry, load_plugins

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


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
