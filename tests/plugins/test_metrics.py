"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from duoseg.core import Registry


def cube(shape, low, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(lo, lo + size) for lo in low)] = True
    return mask


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return (
        sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True)) <= radius**2
    )


def test_overlap_of_two_shifted_cubes(registry: Registry) -> None:
    a, b = cube((30, 30, 30), (5, 5, 5), 10), cube((30, 30, 30), (5, 5, 10), 10)
    assert registry.build("metric", "dice")(a, b, (1, 1, 1)) == pytest.approx(0.5)
    assert registry.build("metric", "jaccard")(a, b, (1, 1, 1)) == pytest.approx(1 / 3)


def test_concentric_spheres_are_their_radius_difference_apart(registry: Registry) -> None:
    shape, centre = (64, 64, 64), (32, 32, 32)
    a, b = ball(shape, centre, 12), ball(shape, centre, 18)
    assert registry.build("metric", "asd")(a, b, (1, 1, 1)) == pytest.approx(6, abs=0.6)
    assert registry.build("metric", "hd95")(a, b, (1, 1, 1)) == pytest.approx(6, abs=0.8)


def test_spacing_makes_distances_millimetres(registry: Registry) -> None:
    a, b = cube((20, 20, 40), (5, 5, 5), 8), cube((20, 20, 40), (5, 5, 9), 8)  # 4 voxels apart in x
    hd = registry.build("metric", "hd95")
    assert hd(a, b, (1.0, 1.0, 2.5)) == pytest.approx(2.5 * hd(a, b, (1.0, 1.0, 1.0)))


def test_surface_distances_equal_a_distance_transforms() -> None:
    """The k-d tree's distances are those of a Euclidean distance transform of each
    surface's complement, far false positives and anisotropic voxels included."""
    from duoseg.plugins.metrics import surface_distances
    from scipy import ndimage

    spacing = (0.5, 0.7, 1.3)
    prediction = ball((60, 70, 50), (25, 35, 20), 9.0, spacing)
    target = ball((60, 70, 50), (27, 33, 22), 10.0, spacing)
    prediction[59, 0, 49] = prediction[0, 69, 0] = True  # stray voxels on the volume's edge

    def surface(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        return (padded & ~ndimage.binary_erosion(padded))[1:-1, 1:-1, 1:-1]

    to_t = ndimage.distance_transform_edt(~surface(target), sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface(prediction), sampling=spacing)
    a, b = surface_distances(prediction, target, spacing)
    assert np.sort(a) == pytest.approx(np.sort(to_t[surface(prediction)]))
    assert np.sort(b) == pytest.approx(np.sort(to_p[surface(target)]))
