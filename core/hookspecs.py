"""The hooks a duoseg plugin implements: one per component kind.

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names
are the hooks below. Each returns a list of :class:`~duoseg.core.components.Component`
records; the registry keeps them and builds one only when a config asks for it::

    from duoseg.core import Component, hookimpl

    @hookimpl
    def duoseg_network() -> list[Component]:
        return [Component("tiny_unet", TinyUNet, "A 2-level 3D U-Net for quick tests")]

Declare the module as an entry point in group ``duoseg`` of your distribution.
A hook name the registry does not know is rejected when the plugin is registered.
"""

from __future__ import annotations

from typing import Final

import pluggy
from duoseg.core.components import Component

PROJECT: Final = "duoseg"
hookspec: Final = pluggy.HookspecMarker(PROJECT)
hookimpl: Final = pluggy.HookimplMarker(PROJECT)


@hookspec
def duoseg_network() -> list[Component]:  # type: ignore[empty-body]
    """Networks: ``SegmentationNetwork`` subclasses mapping (b, c, z, y, x) to scores."""


@hookspec
def duoseg_loss() -> list[Component]:  # type: ignore[empty-body]
    """Losses: subclasses of ``SegmentationLoss`` comparing class scores with a label map."""


@hookspec
def duoseg_sampler() -> list[Component]:  # type: ignore[empty-body]
    """Samplers: draw training patches or stacks from a cache case, deterministically."""


@hookspec
def duoseg_schedule() -> list[Component]:  # type: ignore[empty-body]
    """Schedules: ordered training stages, as data."""


@hookspec
def duoseg_store() -> list[Component]:  # type: ignore[empty-body]
    """Stores: the on-disk format of a volume cache (Zarr, HDF5, ...)."""


@hookspec
def duoseg_importer() -> list[Component]:  # type: ignore[empty-body]
    """Importers: read a source data set (NIfTI, MM-WHS, ...) into cache cases."""


@hookspec
def duoseg_augmentation() -> list[Component]:  # type: ignore[empty-body]
    """Augmentations: random transforms applied to image and label together."""


@hookspec
def duoseg_metric() -> list[Component]:  # type: ignore[empty-body]
    """Metrics: compare a predicted label map with the ground truth."""


@hookspec
def duoseg_method() -> list[Component]:  # type: ignore[empty-body]
    """Methods: ``Method`` subclasses that turn networks into a segmentation."""


@hookspec
def duoseg_writer() -> list[Component]:  # type: ignore[empty-body]
    """Writers: ``Writer`` subclasses, the output formats of ``duoseg predict``."""
