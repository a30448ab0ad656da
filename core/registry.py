"""The component registry: plugins found through entry points, managed by pluggy.

There is no process-wide plugin manager. :func:`load_plugins` builds a fresh
:class:`Registry` and the caller hands it to whatever needs components.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Literal, overload

import pluggy
from duoseg.core.components import KINDS, Component, ComponentInfo, Kind, PluginSource
from duoseg.core.errors import (
    ComponentParameterError,
    DuplicateComponentError,
    PluginError,
    UnknownComponentError,
)
from duoseg.core.interfaces.augmentation import Augmentation
from duoseg.core.interfaces.importer import Importer
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.method import Method
from duoseg.core.interfaces.metric import Metric
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.interfaces.store import VolumeStore
from duoseg.core.interfaces.writer import Writer

from . import hookspecs

ENTRY_POINT_GROUP: Final = "duoseg"
BUILTIN_DISTRIBUTION: Final = "duoseg"
DISABLE_AUTOLOAD_ENV: Final = "DUOSEG_DISABLE_PLUGIN_AUTOLOAD"
BLOCKED_ENV: Final = "DUOSEG_BLOCKED_PLUGINS"
INTERFACES: Final[dict[Kind, type]] = {  # what a component of each kind must be
    "network": SegmentationNetwork,
    "loss": SegmentationLoss,
    "sampler": Sampler,
    "schedule": Schedule,
    "store": VolumeStore,
    "importer": Importer,
    "augmentation": Augmentation,
    "metric": Metric,
    "method": Method,
    "writer": Writer,
}


@dataclass(frozen=True, slots=True)
class _Entry:
    component: Component
    source: PluginSource


def canonical_distribution_name(name: str) -> str:
    """PEP 503 normalisation, so ``My_Plugin`` and ``my-plugin`` block the same thing."""
    return re.sub(r"[-_.]+", "-", name).lower()


def autoload_disabled() -> bool:
    """True when ``DUOSEG_DISABLE_PLUGIN_AUTOLOAD`` asks for built-ins only."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def blocked_from_environment() -> set[str]:
    """Distribution names listed, comma-separated, in ``DUOSEG_BLOCKED_PLUGINS``."""
    raw = os.environ.get(BLOCKED_ENV, "")
    return {canonical_distribution_name(n.strip()) for n in raw.split(",") if n.strip()}


def load_plugins(*, entry_points: bool = True, blocked: Iterable[str] = ()) -> Registry:
    """Build a registry from the entry points in group ``duoseg``.

    The built-in components are entry points of the ``duoseg`` distribution itself and
    are always loaded. Third-party entry points are loaded unless ``entry_points`` is
    false or ``DUOSEG_DISABLE_PLUGIN_AUTOLOAD`` is set; distributions named in
    ``blocked`` or ``DUOSEG_BLOCKED_PLUGINS`` are skipped without being imported.
    """
    skip = {canonical_distribution_name(n) for n in blocked} | blocked_from_environment()
    third_party = entry_points and not autoload_disabled()
    registry = Registry()
    seen: set[tuple[str, str, str]] = set()
    for entry_point in sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value)
    ):
        distribution = _distribution_of(entry_point)
        key = (distribution, entry_point.name, entry_point.value)
        # The same distribution can be visible twice on sys.path (an egg-info in the cwd).
        if key in seen or distribution in skip:
            continue
        seen.add(key)
        if distribution == BUILTIN_DISTRIBUTION or third_party:
            registry.load_entry_point(entry_point)
    return registry


def _distribution_of(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return canonical_distribution_name(dist.name) if dist is not None else "<unknown>"


class Registry:
    """Components by kind and name, each with the plugin that supplied it."""

    def __init__(self) -> None:
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)
        self._entries: dict[Kind, dict[str, _Entry]] = {kind: {} for kind in KINDS}
        self._sources: list[PluginSource] = []

    @property
    def plugins(self) -> list[PluginSource]:
        """Every plugin registered so far, in registration order."""
        return list(self._sources)

    def load_entry_point(self, entry_point: metadata.EntryPoint) -> None:
        """Import one entry point and register the object it names."""
        dist = entry_point.dist
        source = PluginSource(
            plugin=entry_point.name,
            distribution=dist.name if dist is not None else "<unknown>",
            version=dist.version if dist is not None else "<unknown>",
            entry_point=f"{entry_point.name} = {entry_point.value}",
        )
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginError(f"could not import {source}: {type(exc).__name__}: {exc}") from exc
        self.register(plugin, source)

    def register(self, plugin: object, source: PluginSource) -> None:
        """Register a plugin object and collect its components, all or nothing.

        This is the one path for built-in, entry-point and in-process plugins.
        """
        plugin_id = f"{source.distribution}:{source.plugin}"
        try:
            self._manager.register(plugin, name=plugin_id)
            self._manager.check_pending()
        except (ValueError, pluggy.PluginValidationError) as exc:
            if self._manager.is_registered(plugin):
                self._manager.unregister(plugin)
            raise PluginError(f"could not register {source}: {exc}") from exc
        try:
            collected = self._collect(plugin, source)
        except PluginError:
            self._manager.unregister(plugin)
            raise
        for kind, name, entry in collected:
            self._entries[kind][name] = entry
        self._sources.append(source)

    def _collect(self, plugin: object, source: PluginSource) -> list[tuple[Kind, str, _Entry]]:
        collected: list[tuple[Kind, str, _Entry]] = []
        for kind in KINDS:
            caller: pluggy.HookCaller = getattr(self._manager.hook, f"duoseg_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                for component in self._call_hook(impl, kind, source):
                    clash = self._entries[kind].get(component.name) or next(
                        (e for k, n, e in collected if (k, n) == (kind, component.name)), None
                    )
                    if clash is not None:
                        raise DuplicateComponentError(
                            f"{kind} '{component.name}' is registered twice: "
                            f"by {clash.source} and by {source}"
                        )
                    collected.append((kind, component.name, _Entry(component, source)))
        return collected

    @staticmethod
    def _call_hook(impl: pluggy.HookImpl, kind: Kind, source: PluginSource) -> list[Component]:
        try:
            result = impl.function()
        except Exception as exc:
            raise PluginError(
                f"{source}: hook duoseg_{kind} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, list) or not all(isinstance(c, Component) for c in result):
            raise PluginError(
                f"{source}: hook duoseg_{kind} must return a list of Component records, "
                f"got {result!r}"
            )
        return result

    def names(self, kind: str) -> list[str]:
        """Sorted names of every registered component of ``kind``."""
        return sorted(self._kind(kind))

    def describe(self, kind: str, name: str) -> ComponentInfo:
        """The component's summary and the plugin, distribution and version behind it."""
        entry = self._lookup(kind, name)
        return ComponentInfo(
            kind=self._checked_kind(kind),
            name=name,
            summary=entry.component.summary,
            plugin=entry.source.plugin,
            distribution=entry.source.distribution,
            version=entry.source.version,
        )

    @overload
    def build(
        self, kind: Literal["network"], name: str, /, **params: Any
    ) -> SegmentationNetwork: ...
    @overload
    def build(self, kind: Literal["loss"], name: str, /, **params: Any) -> SegmentationLoss: ...
    @overload
    def build(self, kind: Literal["sampler"], name: str, /, **params: Any) -> Sampler: ...
    @overload
    def build(self, kind: Literal["schedule"], name: str, /, **params: Any) -> Schedule: ...
    @overload
    def build(self, kind: Literal["store"], name: str, /, **params: Any) -> VolumeStore: ...
    @overload
    def build(self, kind: Literal["importer"], name: str, /, **params: Any) -> Importer: ...
    @overload
    def build(self, kind: Literal["augmentation"], name: str, /, **params: Any) -> Augmentation: ...
    @overload
    def build(self, kind: Literal["metric"], name: str, /, **params: Any) -> Metric: ...
    @overload
    def build(self, kind: Literal["method"], name: str, /, **params: Any) -> Method: ...
    @overload
    def build(self, kind: Literal["writer"], name: str, /, **params: Any) -> Writer: ...
    @overload
    def build(self, kind: str, name: str, /, **params: Any) -> object: ...
    def build(self, kind: str, name: str, /, **params: Any) -> object:
        """Call the component's factory with ``params``, after checking it accepts them;
        what it returns must be an instance of the kind's interface (:data:`INTERFACES`)."""
        self.check_params(kind, name, params)
        entry = self._lookup(kind, name)
        built = entry.component.factory(**params)
        interface = INTERFACES[self._checked_kind(kind)]
        if not isinstance(built, interface):
            raise PluginError(
                f"{kind} '{name}' from {entry.source}: its factory returned "
                f"{type(built).__name__}, not a {interface.__name__} (the {kind} interface)"
            )
        return built

    def parameters(self, kind: str, name: str) -> list[str]:
        """Names of the keyword parameters the component's factory accepts."""
        factory = self._lookup(kind, name).component.factory
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return []
        return [
            p.name
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def check_params(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        """Raise if the component's factory would not accept ``params``; build nothing."""
        entry = self._lookup(kind, name)
        try:
            signature = inspect.signature(entry.component.factory)
        except (TypeError, ValueError):  # builtins without a signature: the call decides
            return
        try:
            signature.bind(**params)
        except TypeError as exc:
            accepted = ", ".join(self.parameters(kind, name))
            raise ComponentParameterError(
                f"{kind} '{name}' from {entry.source}: {exc}; "
                f"accepted parameters: {accepted or 'none'}"
            ) from exc

    def _checked_kind(self, kind: str) -> Kind:
        if kind not in self._entries:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}"
            )
        return kind

    def _kind(self, kind: str) -> dict[str, _Entry]:
        return self._entries[self._checked_kind(kind)]

    def _lookup(self, kind: str, name: str) -> _Entry:
        entries = self._kind(kind)
        if name in entries:
            return entries[name]
        available = sorted(entries)
        closest = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Closest: {', '.join(closest)}." if closest else ""
        raise UnknownComponentError(
            f"unknown {kind} {name!r}. Available: {', '.join(available) or 'none'}.{hint}"
        )
