r"""Second-order B-spline resampling of a coarse volume to a fine grid, slab by slab.

The baseline's class probabilities (at 2 mm) go back to the original grid with
quadratic B-splines, as the paper does. The grid change is a per-axis scaling, so the
interpolation is separable: one small weight matrix per axis. A slab of fine slices is
three matrix products away from the (prefiltered) coarse coefficients - no
full-resolution array, no per-voxel 27-tap gather as in ``scipy.ndimage.map_coordinates``.

With :math:`\beta_2(t) = 3/4 - t^2` for :math:`|t| \le 1/2`,
:math:`(|t| - 3/2)^2 / 2` for :math:`1/2 < |t| \le 3/2`, else 0, the value at
coarse coordinate :math:`x` is :math:`\sum_k c_k \beta_2(x - k)`, with coefficients
:math:`c` from ``scipy.ndimage.spline_filter`` and mirror boundaries, so it equals
``map_coordinates(..., order=2, mode="mirror")``.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage


def _beta2(t: NDArray[np.float64]) -> NDArray[np.float64]:
    a = np.abs(t)
    return np.where(a <= 0.5, 0.75 - a * a, np.where(a <= 1.5, 0.5 * (a - 1.5) ** 2, 0.0))


def _mirror(index: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def bspline2_weights(coordinates: NDArray[np.float64], n: int) -> NDArray[np.float32]:
    """(len(coordinates), n) weights: row i interpolates at coarse coordinate i."""
    weights = np.zeros((len(coordinates), n), np.float64)
    nearest = np.floor(coordinates + 0.5).astype(np.int64)
    rows = np.arange(len(coordinates))
    for offset in (-1, 0, 1):
        knot = nearest + offset
        np.add.at(weights, (rows, _mirror(knot, n)), _beta2(coordinates - knot))
    return weights.astype(np.float32)


def fine_coordinates(fine: int, coarse: int) -> NDArray[np.float64]:
    """Coarse coordinates of the fine voxel centres (both grids cover the same extent)."""
    return np.asarray((np.arange(fine) + 0.5) * (coarse / fine) - 0.5, dtype=np.float64)


def as_probabilities(values: torch.Tensor) -> torch.Tensor:
    """Upsampled class probabilities (classes first) clipped to [0, 1] and renormalised to
    sum to 1 per voxel.

    Quadratic B-splines overshoot near sharp edges (a trained baseline's values ran from
    -0.56 to 1.56) but reproduce constants, so the interpolated classes still sum to 1
    and the largest is at least 1/C: the clipped sum is positive, and the largest class
    stays the largest (it ties only if two classes exceed 1, which needs the others to
    sum below -1)."""
    clipped = values.clamp(0, 1)
    return clipped / clipped.sum(0, keepdim=True).clamp_min(torch.finfo(clipped.dtype).tiny)


class BSplineUpsampler:
    """Evaluates a (channels, z, y, x) coarse volume on a finer grid, slab by slab."""

    def __init__(self, coarse: NDArray[np.floating], shape: tuple[int, int, int]) -> None:
        self.coefficients = torch.from_numpy(
            np.stack(
                [
                    ndimage.spline_filter(c, order=2, mode="mirror", output=np.float64)
                    for c in coarse
                ]
            )
        ).float()
        self.shape = shape
        self.weights = [
            torch.from_numpy(bspline2_weights(fine_coordinates(f, c), c))
            for f, c in zip(shape, coarse.shape[1:], strict=True)
        ]

    def slab(self, z0: int, z1: int) -> torch.Tensor:
        """(channels, z1 - z0, y, x) values at fine slices z0..z1."""
        wz, wy, wx = self.weights
        values = torch.einsum("zk,ckyx->czyx", wz[z0:z1], self.coefficients)
        values = torch.einsum("yj,czjx->czyx", wy, values)
        return values @ wx.T
