"""The pytest plugin ``duoseg`` (entry-point group ``pytest11``): the
``duoseg_conformance`` marker on every suite test and the ``duoseg_registry`` and
``duoseg_phantom_cache`` fixtures, in any project's tests without a conftest."""

from __future__ import annotations

from pathlib import Path

import pytest
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    MARKER,
    ComponentSuite,
    phantom_cache_path,
    session_registry,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(kind): a test of a duoseg conformance suite (duoseg.testing)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = getattr(item, "cls", None)
        if isinstance(suite, type) and issubclass(suite, ComponentSuite):
            item.add_marker(getattr(pytest.mark, MARKER)(kind=suite.kind))


@pytest.fixture(scope="session")
def duoseg_registry(request: pytest.FixtureRequest) -> Registry:
    """The session's component registry (built-ins and installed plugins)."""
    return session_registry(request.config)


@pytest.fixture(scope="session")
def duoseg_phantom_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A Zarr cache of two small phantom cases, built once per session."""
    return phantom_cache_path(request.config, tmp_path_factory)
