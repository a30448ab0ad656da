"""duoseg's engine: the registry, the component interfaces, configs and tooling.

Nothing here imports :mod:`duoseg.plugins`; components are reached through a
:class:`Registry` built by :func:`load_plugins`.
"""

from __future__ import annotations

from .accounting import NetworkCost, network_cost
from .cache import open_cache
from .components import KINDS, Component, ComponentInfo, Kind, PluginSource
from .config import ComponentRef, ExperimentConfig, check_components, load_config
from .errors import (
    ComponentParameterError,
    ConfigError,
    DuosegError,
    DuplicateComponentError,
    InputShapeError,
    PluginError,
    UnknownComponentError,
    WeightsError,
)
from .hookspecs import hookimpl
from .loss import SegmentationLoss
from .network import SegmentationNetwork
from .registry import Registry, load_plugins
from .weights import load_weights, read_weights, save_weights

__all__ = [
    "KINDS",
    "Component",
    "ComponentInfo",
    "ComponentParameterError",
    "ComponentRef",
    "ConfigError",
    "DuosegError",
    "DuplicateComponentError",
    "ExperimentConfig",
    "InputShapeError",
    "Kind",
    "NetworkCost",
    "PluginError",
    "PluginSource",
    "Registry",
    "SegmentationLoss",
    "SegmentationNetwork",
    "UnknownComponentError",
    "WeightsError",
    "check_components",
    "hookimpl",
    "load_config",
    "load_plugins",
    "load_weights",
    "network_cost",
    "open_cache",
    "read_weights",
    "save_weights",
]
