"""Experiment configs: TOML files validated against typed dataclasses.

A config names components by kind and name plus their parameters. Loading checks
every key and value; an error names the file, the key path and the offending value,
and unknown keys are errors rather than silently ignored::

    seed = 0
    [networks.segmenter]
    component = "tiny_unet"
    params = { base_width = 8 }

``--set a.b=v`` overrides (TOML syntax for ``v``, or a bare string) apply before
validation, so one shipped config serves any data set.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from duoseg.core.errors import ConfigError, DuosegError
from duoseg.core.interfaces.method import Method
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.records.config import ComponentRef, ExperimentConfig, parse
from duoseg.core.registry import Registry

log = logging.getLogger("duoseg.config")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read ``path``, apply ``KEY=VALUE`` overrides and validate the result."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for override in overrides:
        apply_override(raw, override, source=str(source))
    return parse(ExperimentConfig, raw, source=str(source))


def apply_override(raw: dict[str, Any], override: str, *, source: str) -> None:
    """Set ``a.b.c=value`` in a raw config mapping, creating tables as needed."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source}: override {override!r} is not of the form KEY=VALUE")
    *tables, leaf = [part.strip() for part in key.split(".")]
    node = raw
    for i, table in enumerate(tables):
        child = node.setdefault(table, {})
        if not isinstance(child, dict):
            where = ".".join(tables[: i + 1])
            raise ConfigError(f"{source}: override {override!r}: {where!r} is not a table")
        node = child
    node[leaf] = _parse_value(text.strip())


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word such as a path or a component name


def check_components(config: ExperimentConfig, registry: Registry, *, source: str) -> None:
    """Check that every component the config names exists and accepts its params."""
    refs: list[tuple[str, str, ComponentRef]] = [
        *((f"networks.{role}", "network", ref) for role, ref in config.networks.items()),
        *((f"losses.{role}", "loss", ref) for role, ref in config.losses.items()),
        *((f"augmentations[{i}]", "augmentation", r) for i, r in enumerate(config.augmentations)),
    ]
    if config.schedule is not None:
        refs.append(("schedule", "schedule", config.schedule))
    if config.method is not None:
        refs.append(("method", "method", config.method))
    for path, kind, ref in refs:
        try:
            registry.check_params(kind, ref.component, ref.params)
        except DuosegError as exc:
            raise ConfigError(f"{source}: {path}.component = {ref.component!r}: {exc}") from exc


def build_ref(registry: Registry, kind: str, ref: ComponentRef, *, where: str) -> Any:
    """Build the component ``ref`` names; a failure is a :class:`ConfigError` naming
    ``where`` (file and key) and the component, chained to its cause."""
    try:
        return registry.build(kind, ref.component, **ref.params)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where} = {ref.component!r}: {exc}") from exc


def resolve_method(
    config: ExperimentConfig, registry: Registry, *, source: str
) -> tuple[Method, Schedule | None]:
    """The config's method and schedule: ``[method]`` if given, else the method the
    schedule names (with default parameters)."""
    schedule = None
    if config.schedule is not None:
        schedule = build_ref(
            registry, "schedule", config.schedule, where=f"{source}: schedule.component"
        )
    ref = config.method
    if ref is None and schedule is not None:
        ref = ComponentRef(schedule.method)
    elif ref is not None and schedule is not None and ref.component != schedule.method:
        log.warning(
            "%s: schedule %r is written for method %r; training it with method %r",
            source, schedule.name, schedule.method, ref.component,
        )  # fmt: skip
    if ref is None:
        raise ConfigError(f"{source}: neither a [method] nor a [schedule] section")
    method: Method = build_ref(registry, "method", ref, where=f"{source}: method.component")
    method.name = ref.component
    return method, schedule
