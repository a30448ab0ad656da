"""What Net2 sees of Net1's output beside the image: its *guidance*.

``"foreground"`` is the paper's two-channel input: the image and Net1's foreground
probability ``1 - p_0``. ``"probabilities"`` feeds all ``C + 1`` class probabilities
(DESIGN §4's option), so Net2 refines Net1's labelling at full resolution - the
super-resolution reading of the paper's SRCNN inspiration - instead of re-deriving
from K slices which blood pool is which.

Any network in the ``net2`` role declares its guidance as its attribute ``guidance``
(and takes ``1 + 1`` or ``1 + (C + 1)`` input channels accordingly).
"""

from __future__ import annotations

from typing import Literal

import torch
from duoseg.core.data.grid import background
from duoseg.core.errors import ConfigError
from duoseg.core.interfaces.network import SegmentationNetwork
from torch import Tensor

Guidance = Literal["foreground", "probabilities"]
GUIDANCES: tuple[Guidance, ...] = ("foreground", "probabilities")


def guidance_for(net2: SegmentationNetwork) -> Guidance:
    """The guidance ``net2`` declares (its ``guidance`` attribute), refused unless known."""
    guidance = getattr(net2, "guidance", None)
    if guidance not in GUIDANCES:
        raise ConfigError(
            f"networks.net2 ({type(net2).__name__}) declares guidance = {guidance!r}; a net2 "
            f"network sets its attribute guidance to one of {list(GUIDANCES)}"
        )
    return guidance  # type: ignore[no-any-return]


def guide(probabilities: Tensor, guidance: Guidance) -> Tensor:
    """The guidance channels of class probabilities ``([b,] C+1, z, y, x)``."""
    if guidance == "probabilities":
        return probabilities
    return 1 - probabilities.narrow(-4, 0, 1)


def outside_guidance(guidance: Guidance, classes: int) -> list[float]:
    """The guidance of a voxel that is certainly background (outside the volume)."""
    certain = torch.tensor(background(classes)).reshape(classes, 1, 1, 1)
    return guide(certain, guidance).flatten().tolist()
