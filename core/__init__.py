"""duoseg's engine: the registry, every component interface, configs and tooling.

Nothing here imports :mod:`duoseg.plugins`; components are reached through a
:class:`Registry` built by :func:`load_plugins`. Every extension point's interface is
importable from here: a plugin needs no deeper import for the classes it subclasses.
"""

from __future__ import annotations

from .accounting import NetworkCost, network_cost
from .augmentation import Augmentation
from .cache import CacheCase, CacheReader, CacheWriter, CaseMeta, VolumeStore, open_cache
from .components import KINDS, Component, ComponentInfo, Kind, PluginSource
from .config import ComponentRef, ExperimentConfig, check_components, load_config
from .errors import (
    ComponentParameterError,
    ConfigError,
    DataError,
    DuosegError,
    DuplicateComponentError,
    InputShapeError,
    PluginError,
    PredictError,
    UnknownComponentError,
    WeightsError,
)
from .hookspecs import hookimpl
from .importer import ImportedCase, Importer, SourcePair
from .inference import Model, Options
from .loss import SegmentationLoss
from .method import Method, Part, SlabPredictor, TrainingContext
from .metric import Metric
from .network import SegmentationNetwork
from .registry import Registry, load_plugins
from .sampler import Sample, Sampler
from .schedule import LossTerm, Schedule, Stage
from .weights import load_weights, read_weights, save_weights

__all__ = [
    "KINDS",
    "Augmentation",
    "CacheCase",
    "CacheReader",
    "CacheWriter",
    "CaseMeta",
    "Component",
    "ComponentInfo",
    "ComponentParameterError",
    "ComponentRef",
    "ConfigError",
    "DataError",
    "DuosegError",
    "DuplicateComponentError",
    "ExperimentConfig",
    "ImportedCase",
    "Importer",
    "InputShapeError",
    "Kind",
    "LossTerm",
    "Method",
    "Metric",
    "Model",
    "NetworkCost",
    "Options",
    "Part",
    "PluginError",
    "PluginSource",
    "PredictError",
    "Registry",
    "Sample",
    "Sampler",
    "Schedule",
    "SegmentationLoss",
    "SegmentationNetwork",
    "SlabPredictor",
    "SourcePair",
    "Stage",
    "TrainingContext",
    "UnknownComponentError",
    "VolumeStore",
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
