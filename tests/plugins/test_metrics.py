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
