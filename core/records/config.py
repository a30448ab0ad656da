"""Config types: the typed dataclasses an experiment config is read into, and the
typed reader that builds any such dataclass from a mapping.

The reader checks every key and value; an error names the source, the key path and
the offending value, and unknown keys are errors rather than silently ignored. Files,
overrides and the components a config names are read one layer up
(:mod:`duoseg.core.config`); a method's prediction options use the same reader.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from duoseg.core.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ComponentRef:
    """A component chosen by name, with the parameters its factory receives."""

    component: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where training and validation data come from."""

    cache: str | None = None
    validation_cases: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a schedule runs: device, loaders, validation, checkpoints."""

    device: str = "cpu"
    workers: int = 0
    validate_every: int = 0  # iterations; 0 = at the end of each stage only
    checkpoint_every: int = 50
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # bf16 autocast on CUDA; CPU always runs fp32
    deterministic: bool = False
    baseline_spacing: float = 2.0  # mm, the grid a resampling method trains and predicts on
    # Wall-clock budget of the whole schedule, shared by the stages in proportion to their
    # iterations: a stage ends at its iterations or its share, whichever comes first.
    # 0 = iterations only. What comparisons at equal training time set.
    seconds: float = 0.0
    # torch.compile each network in place (nn.Module.compile: parameters and checkpoints
    # unchanged); pays a compile per input shape, for long GPU runs.
    compile: bool = False


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The top level of an experiment config file."""

    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    networks: dict[str, ComponentRef] = dataclasses.field(default_factory=dict)
    losses: dict[str, ComponentRef] = dataclasses.field(default_factory=dict)
    schedule: ComponentRef | None = None
    method: ComponentRef | None = None  # None: the method the schedule names, default params
    augmentations: list[ComponentRef] = dataclasses.field(default_factory=list)


def parse(cls: type[T], data: Any, *, source: str, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and value types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {path or 'top level'} must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{source}: unknown key {_join(path, key)!r}{hint} (allowed here: {', '.join(fields)})"
        )
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], source, _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {_join(path, name)!r}")
    return cls(**values)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, source: str, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, source, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in get_args(hint):
            allowed = ", ".join(repr(a) for a in get_args(hint))
            raise ConfigError(f"{source}: {path} = {value!r} is not one of {allowed}")
        return value
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {path} must be an array, got {value!r}")
        return [_convert(item, v, source, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict:
        _, item = get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {path} must be a table, got {value!r}")
        return {k: _convert(item, v, source, _join(path, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, source=source, path=path)  # type: ignore[arg-type]
    if hint is Any or hint is typing.Any:
        return value
    return _convert_scalar(hint, value, source, path)


def _convert_scalar(hint: type, value: Any, source: str, path: str) -> Any:
    # bool is an int in Python; a config saying `iterations = true` is a mistake.
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{source}: {path} = {value!r} must be of type {hint.__name__}, not {type(value).__name__}"
    )
