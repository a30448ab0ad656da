"""An example duoseg plugin: a residual 3D U-Net and the Tversky loss.

Install it (``pip install -e examples/custom_plugin``) and ``duoseg plugins`` lists
``resunet3d`` and ``tversky``; a config then picks them by name.
"""

from __future__ import annotations

from duoseg.core import Component, hookimpl

from .resunet import ResUNet3d
from .tversky import TverskyLoss


@hookimpl
def duoseg_network() -> list[Component]:
    return [Component("resunet3d", ResUNet3d, "Residual 3D U-Net with instance norm")]


@hookimpl
def duoseg_loss() -> list[Component]:
    return [Component("tversky", TverskyLoss, "Tversky loss: tunable FP/FN trade-off")]
