r"""Signed-distance shapes and the renderer that paints them with partial volume.

A shape is a signed distance :math:`d(p)` in mm (negative inside) with a bounding
box. The renderer paints shapes in order, slab by slab along z, each within its box:
a voxel's coverage by a shape is the fraction of the voxel inside it, taken from the
distance as for a locally flat boundary, :math:`f = \mathrm{clip}(1/2 - d / h, 0, 1)`
with :math:`h` the voxel's width across the boundary. The intensity becomes
:math:`I \leftarrow I + f\,(v - I)` (a later shape covers an earlier one), and the
label is the shape's where :math:`d < 0`. That is the average of the shape over the
voxel (partial volume) that drawing on a finer grid approximates, without the 8x
voxels of a 2x finer grid: what keeps a 512 x 512 x 256 case in seconds.

Distances are exact for spheres, capsules and planes, first-order for ellipsoids
(:math:`(s - 1)/|\nabla s|`). Unions are painted shapes of one value; intersections
take the maximum of distances (:func:`clipped`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float32]
Grid = tuple[Floats, Floats, Floats]  # z, y, x mm, broadcastable
Distance = Callable[[Grid], Floats]
Vector = NDArray[np.float64]
Part = tuple[Distance, Vector, Vector]  # a shape's distance and box, before it is painted


@dataclass(frozen=True)
class Shape:
    """What to paint: a signed distance (mm), its box (mm, z/y/x), a tissue and a label."""

    distance: Distance
    low: Vector
    high: Vector
    tissue: str
    label: int = 0


def _project(grid: Grid, point: Vector, direction: Vector | Sequence[float]) -> Floats:
    """``(p - point) . direction``, skipping zero components to keep broadcasts small."""
    terms = [
        float(w) * (g - np.float32(c))
        for w, g, c in zip(direction, grid, point, strict=True)
        if w != 0
    ]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def ellipsoid(centre: Vector, axes: Vector, frame: Vector) -> Part:
    """An ellipsoid with semi-axes ``axes`` along the rows of ``frame`` (z/y/x unit rows)."""
    a = np.asarray(axes, np.float64)

    def distance(grid: Grid) -> Floats:
        s2: Floats | None = None
        g2: Floats | None = None
        for row, semi in zip(frame, a, strict=True):
            q = _project(grid, centre, row) * np.float32(1 / semi)
            s2 = q * q if s2 is None else s2 + q * q
            r = q * np.float32(1 / semi)
            g2 = r * r if g2 is None else g2 + r * r
        assert s2 is not None and g2 is not None
        s = np.sqrt(s2)
        # s / |grad s| lies in [min axis, max axis]; the clip also settles the centre (0/0).
        scale = np.sqrt(s2 / (g2 + np.float32(1e-12)))
        np.clip(scale, a.min(), a.max(), out=scale)
        return np.asarray((s - 1) * scale, np.float32)

    half = np.sqrt(((np.asarray(frame) * a[:, None]) ** 2).sum(0))
    return distance, centre - half, centre + half


def capsule(start: Vector, end: Vector, r0: float, r1: float) -> Part:
    """A segment with radius ``r0`` at ``start`` growing linearly to ``r1`` at ``end``."""
    axis = end - start
    length2 = max(float(axis @ axis), 1e-9)

    def distance(grid: Grid) -> Floats:
        t = _project(grid, start, axis / length2)
        np.clip(t, 0, 1, out=t)
        total: Floats | None = None
        for g, s, a in zip(grid, start, axis, strict=True):
            d = g - np.float32(s) - t * np.float32(a)
            total = d * d if total is None else total + d * d
        assert total is not None
        return np.asarray(np.sqrt(total) - (np.float32(r0) + t * np.float32(r1 - r0)), np.float32)

    radius = max(r0, r1)
    return distance, np.minimum(start, end) - radius, np.maximum(start, end) + radius


def half_space(point: Vector, normal: Vector) -> Distance:
    """The side of the plane through ``point`` that ``normal`` points away from."""
    unit = normal / np.linalg.norm(normal)
    return lambda grid: _project(grid, point, unit)


def clipped(shape: Part, *cuts: Distance) -> Part:
    """``shape`` intersected with every cut (the maximum of the distances)."""
    inside, low, high = shape

    def distance(grid: Grid) -> Floats:
        d = inside(grid)
        for cut in cuts:
            d = np.maximum(d, cut(grid))
        return d

    return distance, low, high


@dataclass(frozen=True)
class Waves:
    """A sum of random plane waves: a smooth field of standard deviation ``amplitude`` mm
    with detail at the given wavelengths, to move a surface in and out."""

    directions: Vector  # (waves, 3) unit rows
    numbers: Vector  # wave numbers (rad / mm)
    phases: Vector
    amplitude: float

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        amplitude: float,
        wavelengths: tuple[float, float],
        count: int = 8,
    ) -> Waves:
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        numbers = 2 * np.pi / rng.uniform(*wavelengths, count)
        return cls(directions, numbers, rng.uniform(0, 2 * np.pi, count), amplitude)

    def __call__(self, grid: Grid) -> Floats:
        each = np.float32(self.amplitude * np.sqrt(2 / len(self.numbers)))  # cos: sd a / sqrt 2
        total: Floats | None = None
        for direction, k, phase in zip(self.directions, self.numbers, self.phases, strict=True):
            wave = np.cos(_project(grid, -phase / k * direction, k * direction)) * each
            total = wave if total is None else total + wave
        assert total is not None
        return total

    @property
    def reach(self) -> float:
        return float(self.amplitude * np.sqrt(2 * len(self.numbers)))


def roughened(shape: Part, waves: Waves) -> Part:
    """``shape`` with its surface moved in and out by ``waves``: an irregular boundary with
    detail finer than a coarse grid, as trabeculated endocardium has."""
    inside, low, high = shape
    return (lambda grid: inside(grid) + waves(grid)), low - waves.reach, high + waves.reach


def shell(shape: Part, thickness: float) -> Part:
    """``shape`` grown by ``thickness`` mm (its wall, once the shape is painted inside it)."""
    inside, low, high = shape
    return (lambda grid: inside(grid) - np.float32(thickness)), low - thickness, high + thickness


def bezier(points: Sequence[Vector], count: int) -> list[Vector]:
    """``count`` points along the Bezier curve with control ``points`` (de Casteljau)."""
    out = []
    for t in np.linspace(0.0, 1.0, count):
        level = [np.asarray(p, np.float64) for p in points]
        while len(level) > 1:
            level = [(1 - t) * a + t * b for a, b in itertools.pairwise(level)]
        out.append(level[0])
    return out


def tube(
    points: Sequence[Vector], radii: Sequence[float] | float, *, step: float | None = None
) -> list[Part]:
    """Capsules along a Bezier curve through ``points``, radius interpolated over ``radii``
    (one value, or one per end and in between), sampled every ``step`` mm (default the
    smallest radius)."""
    ends = np.atleast_1d(np.asarray(radii, np.float64))
    length = sum(float(np.linalg.norm(b - a)) for a, b in itertools.pairwise(points))
    count = max(2, int(np.ceil(length / (step or float(ends.min())))) + 1)
    path = bezier(points, count)
    radius = np.interp(np.linspace(0, 1, count), np.linspace(0, 1, len(ends)), ends)
    return [
        capsule(path[i], path[i + 1], float(radius[i]), float(radius[i + 1]))
        for i in range(count - 1)
    ]


@dataclass
class Canvas:
    """The volume being painted: intensities (float32) and labels, (z, y, x)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # z, y, x mm
    values: dict[str, float]  # tissue -> intensity

    def __post_init__(self) -> None:
        self.image = np.full(self.shape, self.values["air"], np.float32)
        self.label = np.zeros(self.shape, np.uint16)
        # A voxel's width across a boundary of unknown direction: the mean of its sides.
        self.width = np.float32(np.mean(self.spacing))

    def render(self, shapes: Sequence[Shape], slab: int = 32) -> None:
        """Paint ``shapes`` in order, ``slab`` slices at a time (memory: a few slabs)."""
        for z0 in range(0, self.shape[0], slab):
            z1 = min(z0 + slab, self.shape[0])
            for shape in shapes:
                self._paint(shape, z0, z1)

    def _box(self, shape: Shape, z0: int, z1: int) -> tuple[slice, ...] | None:
        spacing = np.asarray(self.spacing)
        low = np.floor(shape.low / spacing - 0.5).astype(int)
        high = np.ceil(shape.high / spacing + 0.5).astype(int) + 1
        low[0], high[0] = max(low[0], z0), min(high[0], z1)
        box = tuple(
            slice(max(0, int(lo)), min(int(hi), n))
            for lo, hi, n in zip(low, high, self.shape, strict=True)
        )
        return None if any(b.stop <= b.start for b in box) else box

    def _paint(self, shape: Shape, z0: int, z1: int) -> None:
        box = self._box(shape, z0, z1)
        if box is None:
            return
        views = ((-1, 1, 1), (1, -1, 1), (1, 1, -1))
        z, y, x = (
            np.asarray((np.arange(b.start, b.stop) + 0.5) * s, np.float32).reshape(v)
            for b, s, v in zip(box, self.spacing, views, strict=True)
        )
        d = np.broadcast_to(shape.distance((z, y, x)), self.image[box].shape)
        cover = np.clip(np.float32(0.5) - d / self.width, 0, 1)
        image = self.image[box]
        image += cover * (np.float32(self.values[shape.tissue]) - image)
        self.label[box][d < 0] = shape.label
