"""What Net2 sees of Net1's output beside the image: its *guidance*.

``"foreground"`` is the paper's two-channel input: the image and Net1's foreground
probability ``1 - p_0``. ``"probabilities"`` feeds all ``C + 1`` class probabilities
(DESIGN §4's option), so Net2 refines Net1's labelling at full resolution - the
super-resolution reading of the paper's SRCNN inspiration - instead of re-deriving
from K slices which blood pool is which.

Any network in the ``net2`` role declares its guidance through ``in_channels``:
``1 + 1`` or ``1 + (C + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError
from .sampler import overlap

Guidance = Literal["foreground", "probabilities"]
GUIDANCES: tuple[Guidance, ...] = ("foreground", "probabilities")


def guidance_channels(guidance: Guidance, classes: int) -> int:
    """Channels of Net1's output that ``guidance`` feeds (background included in ``classes``)."""
    return 1 if guidance == "foreground" else classes


def guidance_of(in_channels: int, classes: int) -> Guidance:
    """The guidance a ``net2`` with ``in_channels`` inputs expects."""
    for guidance in GUIDANCES:
        if in_channels == 1 + guidance_channels(guidance, classes):
            return guidance
    raise ConfigError(
        f"networks.net2 takes {in_channels} input channels; it must take the image plus "
        f"Net1's foreground (2) or its {classes} class probabilities ({1 + classes})"
    )


def guide(probabilities: Tensor, guidance: Guidance) -> Tensor:
    """The guidance channels of class probabilities ``([b,] C+1, z, y, x)``."""
    if guidance == "probabilities":
        return probabilities
    return 1 - probabilities.narrow(-4, 0, 1)


def outside_guidance(guidance: Guidance, classes: int) -> list[float]:
    """The guidance of a voxel that is certainly background (outside the volume)."""
    background = torch.zeros(classes, 1, 1, 1)
    background[0] = 1
    return guide(background, guidance).flatten().tolist()


def upsample_box(
    coarse: Tensor,
    shape: Sequence[int],
    origin: Sequence[int],
    size: Sequence[int],
    fill: Sequence[float],
) -> Tensor:
    """Trilinear upsampling of coarse channels (c, z', y', x') that span a volume of
    ``shape`` full-resolution voxels, evaluated on the box at ``origin`` (z, y, x) of
    ``size`` voxels; channel ``i`` is ``fill[i]`` where the box leaves the volume.

    Inside the volume it equals ``F.interpolate(coarse[None], size=shape,
    mode="trilinear", align_corners=False)`` cut to the box, without ever building the
    full-resolution volume: training crops, validation and inference slabs all read
    Net1's output through this one function."""
    device = coarse.device
    out = torch.tensor(fill, dtype=torch.float32, device=device).reshape(-1, 1, 1, 1)
    out = out.expand(coarse.shape[0], *size).clone()
    where = overlap(origin, size, shape)
    if where is None:
        return out
    inside, box = where
    # Normalised coordinates of the full-resolution voxel centres (align_corners=False).
    axes = [
        (torch.arange(s.start, s.stop, device=device, dtype=torch.float32) * 2 + 1) / n - 1
        for s, n in zip(inside, shape, strict=True)
    ]
    gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack((gx, gy, gz), -1)[None]
    sampled = F.grid_sample(
        coarse[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0]
    out[(slice(None), *box)] = sampled
    return out
