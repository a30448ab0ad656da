"""Component records: what a plugin hook returns, and what the registry knows of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

Kind = Literal[
    "network",
    "loss",
    "sampler",
    "schedule",
    "store",
    "importer",
    "augmentation",
    "metric",
    "method",
    "writer",
]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class Component:
    """One buildable component as a plugin supplies it.

    ``factory`` is called only by :meth:`Registry.build`; listing components never
    calls it, so a plugin should hand over a class or function, not an instance.
    """

    name: str
    factory: Callable[..., Any]
    summary: str

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"component name {self.name!r} must be non-empty letters, digits, '_' or '-'"
            )
        if not callable(self.factory):
            raise TypeError(f"component {self.name!r}: factory {self.factory!r} is not callable")
        if not self.summary or "\n" in self.summary:
            raise ValueError(f"component {self.name!r}: summary must be one non-empty line")


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where a plugin came from: its entry point and the distribution that declares it."""

    plugin: str
    distribution: str
    version: str
    entry_point: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution} {self.version}, {self.entry_point})"


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """What :meth:`Registry.describe` answers: the component and its provenance."""

    kind: Kind
    name: str
    summary: str
    plugin: str
    distribution: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
        }
