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

from typing import Literal

import torch
from duoseg.core.data.grid import background
from duoseg.core.errors import ConfigError
from torch import Tensor

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
    certain = torch.tensor(background(classes)).reshape(classes, 1, 1, 1)
    return guide(certain, guidance).flatten().tolist()
