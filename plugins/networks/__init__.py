"""duoseg's built-in networks: Net1, Net2 and the 3D U-Net baseline."""

from __future__ import annotations

from duoseg.core import Component, hookimpl

from .net2 import Net2
from .unet import DilatedUNet3d, UNet3d


@hookimpl
def duoseg_network() -> list[Component]:
    return [
        Component("net1", DilatedUNet3d, "Dilated 5x5x5 3D U-Net on the coarse whole volume"),
        Component("net2", Net2, "z-equivariant 3D->2D U-Net labelling each slice from K"),
        Component("unet3d", UNet3d, "Plain 3x3x3 3D U-Net baseline (trained at 2 mm)"),
    ]
