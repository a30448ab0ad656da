"""An example duoseg plugin: a residual 3D U-Net, the Tversky loss, a method of its
own - a cascade of a coarse network and a full-resolution one - with its schedule, and
an output format (one NIfTI mask per structure).

Install it (``pip install -e examples/custom_plugin``) and ``duoseg plugins`` lists
``resunet3d``, ``tversky``, the method ``cascade`` and its schedule ``cascade``, and the
writer ``class-masks``; a config then picks them by name, and ``duoseg predict --format
class-masks`` writes masks.
"""

from __future__ import annotations

from duoseg.core import Component, hookimpl

from .cascade import Cascade, cascade
from .masks import ClassMasks
from .resunet import ResUNet3d
from .tversky import TverskyLoss


@hookimpl
def duoseg_network() -> list[Component]:
    return [Component("resunet3d", ResUNet3d, "Residual 3D U-Net with instance norm")]


@hookimpl
def duoseg_loss() -> list[Component]:
    return [Component("tversky", TverskyLoss, "Tversky loss: tunable FP/FN trade-off")]


@hookimpl
def duoseg_method() -> list[Component]:
    return [Component("cascade", Cascade, "Coarse network -> guided full-resolution windows")]


@hookimpl
def duoseg_schedule() -> list[Component]:
    return [Component("cascade", cascade, "The cascade's two stages: coarse, then fine")]


@hookimpl
def duoseg_writer() -> list[Component]:
    return [Component("class-masks", ClassMasks, "One NIfTI mask per structure, per case")]
