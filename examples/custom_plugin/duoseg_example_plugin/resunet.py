"""A residual 3D U-Net (pre-activation blocks with instance norm).

Residual blocks with normalisation train faster from scratch than the paper's plain
blocks, which makes this a practical drop-in for ``net1`` or ``unet3d`` slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from duoseg.core import SegmentationNetwork
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """norm-ReLU-conv twice, plus a 1x1x1 projection of the input when widths differ."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.InstanceNorm3d(in_channels, affine=True),
            nn.ReLU(),
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResUNet3d(SegmentationNetwork):
    """A residual 3D U-Net with ``levels`` resolutions (widths double per level)."""

    def __init__(
        self, in_channels: int = 1, classes: int = 8, *, width: int = 16, levels: int = 3
    ) -> None:
        super().__init__(in_channels, classes)
        widths = [width * 2**i for i in range(levels)]
        self.stem = nn.Conv3d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            ResidualBlock(cin, cout)
            for cin, cout in zip([widths[0], *widths[:-1]], widths, strict=True)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(levels - 1))
        )
        self.merge = nn.ModuleList(
            ResidualBlock(2 * widths[i], widths[i]) for i in reversed(range(levels - 1))
        )
        self.head = nn.Conv3d(widths[0], classes, 1)
        self.multiple = 2 ** (levels - 1)

    def _forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        x = F.pad(x, [p for s in reversed(size) for p in (0, -s % self.multiple)])
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat((up(x), skips.pop()), 1))
        return self.head(x)[..., : size[0], : size[1], : size[2]]
