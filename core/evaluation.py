"""Whole-volume prediction with Net1 and Net2, and Dice per class, for validation.

Net2's z-equivariance makes a whole volume one pass per slab: a slab of ``slab``
output slices reads ``slab + K - 1`` input slices, and the volume is padded by
K // 2 slices at each end (image -1, foreground 0) exactly as samplers pad stacks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from .sampler import IMAGE_PAD


@torch.no_grad()
def net1_probabilities(net1: nn.Module, coarse_image: NDArray[np.floating], device: str) -> Tensor:
    """Net1's class probabilities (C+1, z, y, x) on a whole coarse volume."""
    x = torch.as_tensor(np.asarray(coarse_image, dtype=np.float32), device=device)[None, None]
    scores: Tensor = net1.eval()(x)
    return scores.float().softmax(1)[0]


def upsample(volume: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Trilinear resampling of (c, z, y, x) to ``shape`` (z, y, x)."""
    return F.interpolate(volume[None], size=tuple(shape), mode="trilinear", align_corners=False)[0]


@torch.no_grad()
def net2_labels(
    net2: nn.Module, image: Tensor, foreground: Tensor, k: int, *, slab: int = 16
) -> Tensor:
    """Labels (z, y, x) uint8 of a whole volume: image and foreground are (z, y, x)."""
    half = k // 2
    padded = torch.stack(
        (
            F.pad(image.float(), (0, 0, 0, 0, half, half), value=IMAGE_PAD),
            F.pad(foreground.float(), (0, 0, 0, 0, half, half), value=0.0),
        )
    )
    depth = image.shape[0]
    out = torch.empty(image.shape, dtype=torch.uint8, device=image.device)
    net2.eval()
    for start in range(0, depth, slab):
        stop = min(start + slab, depth)
        scores = net2(padded[None, :, start : stop + 2 * half])
        out[start:stop] = scores[0].argmax(0).to(torch.uint8)
    return out


def dice_per_class(
    prediction: NDArray[np.integer] | Tensor, target: NDArray[np.integer] | Tensor, classes: int
) -> list[float | None]:
    """Binary Dice of each class 1..classes-1; None where both are empty."""
    p = torch.as_tensor(prediction).reshape(-1).long()
    t = torch.as_tensor(target).reshape(-1).long().to(p.device)
    both = torch.bincount(p[p == t], minlength=classes).double()
    totals = (
        torch.bincount(p, minlength=classes).double()
        + torch.bincount(t, minlength=classes).double()
    )
    return [None if totals[c] == 0 else float(2 * both[c] / totals[c]) for c in range(1, classes)]
