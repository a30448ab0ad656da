"""Shared fixtures, and the parametrisation of conformance suites over the registry."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from duoseg.core import Registry, load_plugins

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a suite class once per registered component of its ``every_registered`` kind."""
    kind = getattr(metafunc.cls, "every_registered", None)
    if kind and "component_name" in metafunc.fixturenames:
        metafunc.parametrize("component_name", load_plugins().names(kind))


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
