"""Label post-processing: each class's largest connected component."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


def largest_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest 26-connected component of ``mask`` (all of it if it has one)."""
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return mask
    keep = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    return np.asarray(components == keep)


def largest_components(labels: NDArray[np.uint8], classes: int) -> NDArray[np.uint8]:
    """Keep each class's largest 26-connected component; the rest becomes background."""
    out = labels.copy()
    for c in range(1, classes):
        mask = labels == c
        out[mask & ~largest_component(mask)] = 0
    return out
