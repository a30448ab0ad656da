"""duoseg's engine: the registry, every component interface, configs and tooling.

Nothing here imports :mod:`duoseg.plugins`; components are reached through a
:class:`Registry` built by :func:`load_plugins`. Every extension point's interface is
importable from here: a plugin needs no deeper import for the classes it subclasses.
"""

from __future__ import annotations

from duoseg.core.accounting import NetworkCost, network_cost
from duoseg.core.components import KINDS, Component, ComponentInfo, Kind, PluginSource
from duoseg.core.config import check_components, load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import (
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
from duoseg.core.hookspecs import hookimpl
from duoseg.core.inference.streaming import Options
from duoseg.core.interfaces.augmentation import Augmentation
from duoseg.core.interfaces.importer import ImportedCase, Importer, SourcePair
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.method import Method, Model, Part, SlabPredictor, TrainingContext
from duoseg.core.interfaces.metric import Metric
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import Sample, Sampler
from duoseg.core.interfaces.schedule import LossTerm, Schedule, Stage
from duoseg.core.interfaces.store import CacheCase, CacheReader, CacheWriter, VolumeStore
from duoseg.core.interfaces.writer import FolderSink, LabelSink, Writer
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.config import ComponentRef, ExperimentConfig
from duoseg.core.registry import Registry, load_plugins
from duoseg.core.training.weights import load_weights, read_weights, save_weights

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
    "FolderSink",
    "ImportedCase",
    "Importer",
    "InputShapeError",
    "Kind",
    "LabelSink",
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
    "Writer",
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
