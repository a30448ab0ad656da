"""The base of every conformance suite: the session's registry and phantom cache, and
:func:`every_registered`, which runs a suite once per registered component of a kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import pytest
import torch
from duoseg.core.registry import Registry, load_plugins

MARKER: Final = "duoseg_conformance"


_REGISTRY = pytest.StashKey[Registry]()


_PHANTOM_CACHE = pytest.StashKey[Path]()


def session_registry(config: pytest.Config) -> Registry:
    """The test session's registry, built by :func:`load_plugins` on first use."""
    if _REGISTRY not in config.stash:
        config.stash[_REGISTRY] = load_plugins()
    return config.stash[_REGISTRY]


def phantom_cache_path(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """A Zarr cache of two small phantom cases, built once per test session, with the
    levels the built-in methods read (the coarse 3 mm one and the baseline's 2 mm one)."""
    if _PHANTOM_CACHE not in config.stash:
        from duoseg.phantoms import phantom_cache

        root = factory.mktemp("duoseg-phantom")
        config.stash[_PHANTOM_CACHE] = phantom_cache(
            root,
            cases=2,
            size=(48, 40, 32),
            seed=5,
            chunks=(8, 16, 16),
            levels={"coarse": 3.0, "baseline": 2.0},
        )
    return config.stash[_PHANTOM_CACHE]


@dataclass(frozen=True)
class EveryRegistered:
    """A suite's ``name`` standing for every registered component of ``kind``."""

    kind: str
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()

    def names(self, registry: Registry) -> list[str]:
        return [name for name in registry.names(self.kind) if name not in self.exclude]


def every_registered(
    kind: str,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    exclude: Sequence[str] = (),
) -> EveryRegistered:
    """Run a suite once per registered component of ``kind``; set it as the suite's
    ``name``. ``params`` maps component names to their factory arguments (on top of the
    suite's ``params``); components named in ``exclude`` are left out."""
    return EveryRegistered(
        kind, {name: dict(p) for name, p in (params or {}).items()}, frozenset(exclude)
    )


class ComponentSuite:
    kind: ClassVar[str]
    name: ClassVar[str | EveryRegistered]
    params: ClassVar[dict[str, Any]] = {}

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``component_name`` when ``name`` is :func:`every_registered`."""
        every = getattr(self, "name", None)
        if not isinstance(every, EveryRegistered):
            return
        if every.kind != self.kind:
            raise TypeError(
                f"{type(self).__name__}: a {self.kind} suite cannot run "
                f"every_registered({every.kind!r})"
            )
        if "component_name" in metafunc.fixturenames:
            metafunc.parametrize("component_name", every.names(session_registry(metafunc.config)))

    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls, request: pytest.FixtureRequest) -> Registry:
        return session_registry(request.config)

    @pytest.fixture
    def component_name(self) -> str:
        name = getattr(self, "name", None)
        if not isinstance(name, str):  # unset, or pytest_generate_tests did not run
            raise TypeError(
                f"{type(self).__name__}.name = {name!r}: set a component's name, or "
                f"every_registered({self.kind!r})"
            )
        return name

    def component_params(self, component_name: str) -> dict[str, Any]:
        """The factory arguments: the suite's ``params``, then the component's own."""
        own = (
            self.name.params.get(component_name, {})
            if isinstance(self.name, EveryRegistered)
            else {}
        )
        return {**self.params, **own}

    def build(self, registry: Registry, component_name: str, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return registry.build(self.kind, component_name, **self.component_params(component_name))
