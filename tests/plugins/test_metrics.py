"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from duoseg.core import InputShapeError, Registry


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


def test_empty_masks(registry: Registry) -> None:
    empty, full = np.zeros((8, 8, 8), bool), cube((8, 8, 8), (2, 2, 2), 3)
    assert np.isnan(registry.build("metric", "dice")(empty, empty, (1, 1, 1)))
    assert registry.build("metric", "dice")(empty, full, (1, 1, 1)) == 0
    assert registry.build("metric", "asd")(empty, full, (1, 1, 1)) == float("inf")


def test_bad_inputs_are_explained(registry: Registry) -> None:
    with pytest.raises(
        InputShapeError, match=r"Dice: prediction shape \(4, 4, 4\) differs from target \(4, 4, 5\)"
    ):
        registry.build("metric", "dice")(
            np.ones((4, 4, 4), bool), np.ones((4, 4, 5), bool), (1, 1, 1)
        )
    with pytest.raises(InputShapeError, match=r"HD95: spacing \(1, 0, 1\) must be 3 sizes > 0"):
        registry.build("metric", "hd95")(
            np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool), (1, 0, 1)
        )
