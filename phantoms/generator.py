"""Synthetic whole-heart phantoms: duoseg's built-in data set, fit for a question about
resolution.

Each case is a chest written as an MM-WHS-style NIfTI pair (``ct_train_1001_image.nii.gz``
/ ``ct_train_1001_label.nii.gz``) with the seven MM-WHS structures, built as a heart is:

- the LV cavity inside a myocardium 8-12 mm thick, with trabeculae (1-3 mm) and two
  papillary muscles in the cavity, labelled myocardium; the LV opens into the aorta
  through the aortic valve plane and into the LA through the mitral plane (the base);
- the RV wrapped around the septum behind a 3-5 mm free wall (not labelled Myo), with
  trabeculae and a moderator band, its outflow tract rising to the pulmonary valve
  where the PA begins; the RA above it through the tricuspid plane;
- atria with 2-3 mm walls; four pulmonary veins into the LA and the venae cavae into
  the RA, labelled as the atrium for their first centimetre, then unlabelled;
- the aorta's root, ascending part and arch labelled AA, its descending part beside
  the spine not; the PA trunk and the start of its branches labelled PA;
- coronary arteries of 2-4 mm in epicardial fat, lungs with vessels, spine, ribs and
  sternum, subcutaneous fat.

In CT all blood pools share one contrast level (left and right sides differ by case), so
only shape and context tell LV from AA or LA from its veins. Intensities are drawn per
case (HU: blood 250-450, myocardium 80-150, fat about -100, lung about -850, bone 400
and up); shapes are painted with partial volume (:mod:`duoseg.phantoms.shapes`),
blurred in-plane and given noise of 15-40 HU. ``mr`` gives bSSFP-like contrast with a
smooth bias field and Rician noise.

The default grid is a protocol's: CT 512 x 512 x 256 at 0.40-0.48 mm in-plane and
0.55-0.70 mm slices, MR 208 x 208 x 96 at 1.05-1.3 mm and 1.5-1.9 mm. Another ``size``
keeps the protocol's field of view (coarser voxels: small cases for fast tests). A case
is a pure function of (seed, case number, modality, size).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from duoseg.phantoms.shapes import (
    Canvas,
    Distance,
    Part,
    Shape,
    Vector,
    Waves,
    capsule,
    clipped,
    ellipsoid,
    half_space,
    roughened,
    shell,
    tube,
)
from duoseg.plugins.importers import MMWHS_LABELS  # the phantoms are MM-WHS-style files
from numpy.typing import NDArray
from scipy import ndimage

Modality = Literal["ct", "mr"]


@dataclass(frozen=True)
class Protocol:
    """A modality's acquisition: voxels (x, y, z) and spacing ranges (mm)."""

    size: tuple[int, int, int]
    in_plane: tuple[float, float]
    slices: tuple[float, float]

    @property
    def fov(self) -> tuple[float, float, float]:
        """The mean field of view (x, y, z mm)."""
        xy, z = float(np.mean(self.in_plane)), float(np.mean(self.slices))
        return (self.size[0] * xy, self.size[1] * xy, self.size[2] * z)


PROTOCOLS: dict[str, Protocol] = {
    "ct": Protocol((512, 512, 256), (0.40, 0.48), (0.55, 0.70)),
    "mr": Protocol((208, 208, 96), (1.05, 1.30), (1.50, 1.90)),
}
SMALL_SIZE = (160, 128, 80)  # the fast choice for tests and quick runs (x, y, z)

SUPERIOR, ANTERIOR, RIGHT = np.eye(3)  # RAS+ directions in (z, y, x) components


@dataclass(frozen=True)
class PhantomCase:
    """One generated case: arrays are (z, y, x) in RAS+ order (x right, y anterior)."""

    name: str
    image: NDArray[np.int16] | NDArray[np.float32]
    label: NDArray[np.uint16]
    spacing: tuple[float, float, float]  # z, y, x in mm


def _unit(v: Vector) -> Vector:
    return np.asarray(v / np.linalg.norm(v))


def _rotation(rng: np.random.Generator, degrees: float) -> Vector:
    """A random rotation of at most ``degrees`` around a random axis."""
    axis = _unit(rng.normal(size=3))
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.asarray(np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k)


class _Scene:
    """Shapes collected in painting order (later ones cover earlier ones)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.shapes: list[Shape] = []

    def add(self, part: Part, tissue: str, label: str | None = None) -> None:
        distance, low, high = part
        self.shapes.append(Shape(distance, low, high, tissue, MMWHS_LABELS[label] if label else 0))

    def walled(
        self, parts: list[Part], wall: float, lumen: str, label: str | None, *cuts: Distance
    ) -> None:
        """A vessel or chamber: its wall (``wall`` mm, unlabelled myocardium-like tissue)
        first, then the lumen inside, both cut by ``cuts`` (a valve plane: where one
        blood pool meets the next without a wall between them)."""
        for part in parts:
            self.add(clipped(shell(part, wall), *cuts), "wall")
        for part in parts:
            self.add(clipped(part, *cuts), lumen, label)


def _values(modality: Modality, rng: np.random.Generator) -> dict[str, float]:
    u = rng.uniform
    if modality == "ct":
        left = u(280, 450)
        right = float(np.clip(left + u(-90, 60), 250, 450))
        myo = u(80, 150)
        return {
            "air": -1000.0,
            "fat": u(-115, -85),
            "muscle": u(35, 60),
            "lung": u(-880, -820),
            "cortical": u(800, 1100),
            "cancellous": u(400, 520),
            "disc": 80.0,
            "canal": 25.0,
            "cartilage": 110.0,
            "myocardium": myo,
            "wall": myo,
            "left": left,
            "right": right,
            "lung_vessel": right * 0.9,
            "ivc": u(120, 250),
        }
    blood = u(0.82, 0.95)
    return {
        "air": 0.0,
        "fat": 0.85,
        "muscle": 0.3,
        "lung": 0.07,
        "cortical": 0.05,
        "cancellous": 0.55,
        "disc": 0.4,
        "canal": 0.8,
        "cartilage": 0.3,
        "myocardium": 0.28,
        "wall": 0.3,
        "left": blood,
        "right": blood * u(0.93, 1.02),
        "lung_vessel": 0.6,
        "ivc": 0.8,
    }


def _chest(scene: _Scene, centre: Vector, fov: Vector) -> None:
    """Body with subcutaneous fat, lungs with vessels, spine, ribs and sternum."""
    rng = scene.rng
    height = 4 * fov[0]  # beyond the field of view in z
    body_axes = np.array([height, rng.uniform(118, 130), rng.uniform(160, 180)])
    scene.add(ellipsoid(centre, body_axes, np.eye(3)), "fat")
    scene.add(ellipsoid(centre, body_axes - [0, *rng.uniform(8, 16, 2)], np.eye(3)), "muscle")
    lungs = []
    for side in (-1.0, 1.0):
        lung_centre = centre + np.array([rng.uniform(5, 20), -12, side * rng.uniform(62, 72)])
        axes = np.array([130, rng.uniform(82, 92), rng.uniform(55, 62)])
        scene.add(ellipsoid(lung_centre, axes, _rotation(rng, 5)), "lung")
        lungs.append((lung_centre, axes))
    for lung_centre, axes in lungs:
        hilum = lung_centre - np.array([0, 0, np.sign(lung_centre[2] - centre[2]) * axes[2] * 0.6])
        for _ in range(28):
            direction = _unit(
                rng.normal(size=3) * [0.8, 0.8, 0.5] + [0, 0, np.sign(lung_centre[2] - centre[2])]
            )
            start = hilum + direction * rng.uniform(10, 30)
            length = rng.uniform(20, 45)
            end = start + _unit(direction + rng.normal(size=3) * 0.3) * length
            scene.add(
                capsule(start, end, rng.uniform(1.2, 2.2), rng.uniform(0.4, 0.8)), "lung_vessel"
            )
    _spine(scene, centre, fov)
    _ribs(scene, centre, fov, body_axes)


def _spine(scene: _Scene, centre: Vector, fov: Vector) -> None:
    rng = scene.rng
    axis = centre + np.array([0.0, -rng.uniform(72, 82), rng.uniform(-4, 4)])
    radius, level = rng.uniform(16, 20), rng.uniform(24, 28)
    for k in range(-int(fov[0] / level) - 1, int(fov[0] / level) + 2):
        middle = axis + np.array([k * level, 0, 0])
        half = np.array([level / 2 - 3 - radius, 0, 0])  # discs of about 6 mm between bodies
        scene.add(capsule(middle - half, middle + half, radius, radius), "cortical")
        scene.add(capsule(middle - half, middle + half, radius - 1.5, radius - 1.5), "cancellous")
    top = axis + np.array([fov[0], -radius - 9, 0])
    bottom = axis - np.array([fov[0], radius + 9, 0])
    scene.add(capsule(bottom, top, 8, 8), "canal")


def _ribs(scene: _Scene, centre: Vector, fov: Vector, body: Vector) -> None:
    rng = scene.rng
    spacing = rng.uniform(24, 30)
    for k in range(-int(fov[0] / spacing) - 1, int(fov[0] / spacing) + 2):
        z = k * spacing + rng.uniform(-3, 3)
        for side in (-1.0, 1.0):
            angles = np.deg2rad([-78, -35, 20, 70])  # from the spine round to the front
            ry, rx = body[1] - 14, body[2] - 14
            points = [
                centre + np.array([z - 12 * i, ry * np.sin(a), side * rx * np.cos(a)])
                for i, a in enumerate(angles)
            ]
            for part in tube(points, rng.uniform(3.5, 5.0), step=8.0):
                scene.add(part, "cortical")
    sternum_top = centre + np.array([fov[0], body[1] - 10, 0])
    sternum_bottom = centre + np.array([-fov[0] / 2, body[1] - 14, 0])
    scene.add(capsule(sternum_bottom, sternum_top, 8, 9), "cancellous")


def _heart_frame(rng: np.random.Generator) -> Vector:
    """Rows u (base to apex), v (towards the RV), w = u x v, in (z, y, x) components.

    In RAS+ the apex points left (-x), anterior (+y) and inferior (-z); across the base
    plane v runs anterior-right and w superior-left."""
    u = _unit(np.array([-0.55, 0.5, -0.6]))
    v = np.array([0.2, 0.45, 0.75])
    v = _unit(v - u * (u @ v))
    return np.asarray(np.stack([u, v, np.cross(u, v)]) @ _rotation(rng, 12).T)


class _Heart:
    """The heart's geometry in its own frame: ``at(u, v, w)`` mm from the base centre."""

    def __init__(self, scene: _Scene, base: Vector) -> None:
        self.scene, self.rng = scene, scene.rng
        self.frame = _heart_frame(self.rng)
        self.base = base
        self.scale = self.rng.uniform(0.88, 1.1)
        self.u, self.v, self.w = self.frame

    def at(self, u: float, v: float, w: float) -> Vector:
        return np.asarray(self.base + self.scale * (u * self.u + v * self.v + w * self.w))

    def axes(self, *semi: float, jitter: float = 0.08) -> Vector:
        return np.asarray(self.scale * np.array(semi) * self.rng.uniform(1 - jitter, 1 + jitter, 3))

    def endocardium(self, cavity: Part) -> Part:
        """A cavity's irregular inner surface (about 1.4 mm deep, 3-10 mm waves)."""
        return roughened(cavity, Waves.draw(self.rng, 1.4, (3.0, 10.0), 10))

    def lumen(self, parts: list[Part]) -> list[Part]:
        """A great vessel's lumen, irregular by about 0.6 mm (one field for all its parts)."""
        waves = Waves.draw(self.rng, 0.6, (4.0, 12.0))
        return [roughened(part, waves) for part in parts]

    def below_base(self) -> Distance:
        return half_space(self.base, -self.u)  # the ventricles' side: u >= 0

    def above_base(self) -> Distance:
        return half_space(self.base, self.u)


def _heart(scene: _Scene, base: Vector) -> None:
    """Mediastinum, epicardial fat and coronaries, atria, ventricles, outflows: in an order
    where each part covers what it sits in."""
    heart = _Heart(scene, base)
    rng = scene.rng
    scene.add(ellipsoid(heart.at(18, 10, 0), heart.axes(78, 66, 64), heart.frame), "muscle")
    lv = _LeftVentricle(heart)
    rv_centre, rv_axes = heart.at(30, 30, -4), heart.axes(45, 24, 30)
    for centre, axes in ((lv.centre, lv.outer), (rv_centre, rv_axes)):
        ventricle = clipped(ellipsoid(centre, axes, heart.frame), heart.below_base())
        scene.add(shell(ventricle, rng.uniform(3, 8)), "fat")
    _coronaries(heart, lv)
    _atria(heart)
    _right_ventricle(heart, rv_centre, rv_axes)
    lv.paint()
    _outflows(heart)


class _LeftVentricle:
    def __init__(self, heart: _Heart) -> None:
        self.heart = heart
        rng = heart.rng
        self.centre_u = 30.0
        self.cavity = heart.axes(45, 21, 21)
        self.wall = rng.uniform(8, 12)
        self.outer = self.cavity + np.array([0.8, 1, 1]) * self.wall * heart.scale
        self.centre = heart.at(self.centre_u, 0, 0)

    def outer_radius(self, u: float) -> float:
        """The epicardium's distance from the long axis at ``u`` (mm, heart frame)."""
        t = (u - self.centre_u) * self.heart.scale / self.outer[0]
        return float(np.sqrt(max(0.0, 1 - t * t)) * self.outer[1] / self.heart.scale)

    def paint(self) -> None:
        heart, scene, rng = self.heart, self.heart.scene, self.heart.rng
        cut = heart.below_base()
        outer = clipped(ellipsoid(self.centre, self.outer, heart.frame), cut)
        epicardium = roughened(outer, Waves.draw(rng, 0.5, (4.0, 12.0)))
        scene.add(epicardium, "myocardium", "Myo")
        cavity = heart.endocardium(clipped(ellipsoid(self.centre, self.cavity, heart.frame), cut))
        scene.add(cavity, "left", "LV")
        inner = self.cavity[1] / heart.scale

        def wall_point(u: float, angle: float, depth: float) -> Vector:
            t = (u - self.centre_u) * heart.scale / self.cavity[0]
            r = np.sqrt(max(0.0, 1 - t * t)) * inner * depth
            return heart.at(u, r * np.cos(angle), r * np.sin(angle))

        for _ in range(rng.integers(45, 70)):  # trabeculae, densest towards the apex
            u0, angle = rng.uniform(12, 66), rng.uniform(0, 2 * np.pi)
            u1, turn = u0 + rng.uniform(8, 22), rng.uniform(-0.6, 0.6)
            depth = rng.uniform(0.78, 0.97)
            scene.add(
                capsule(
                    wall_point(u0, angle, depth),
                    wall_point(u1, angle + turn, depth),
                    rng.uniform(0.5, 1.5),
                    rng.uniform(0.5, 1.5),
                ),
                "myocardium",
                "Myo",
            )
        for angle in (rng.uniform(3.3, 3.8), rng.uniform(5.3, 5.8)):  # papillary muscles
            root, tip = wall_point(58, angle, 0.95), wall_point(30, angle, 0.45)
            scene.add(
                capsule(root, tip, rng.uniform(4, 5.5), rng.uniform(1.5, 2.5)), "myocardium", "Myo"
            )


def _right_ventricle(heart: _Heart, centre: Vector, axes: Vector) -> None:
    """The RV behind its free wall, with trabeculae and a moderator band."""
    scene, rng = heart.scene, heart.rng
    # Cut after the wall is grown: no wall across the tricuspid plane, RA meets RV there.
    cavity = heart.endocardium(ellipsoid(centre, axes, heart.frame))
    scene.walled([cavity], rng.uniform(3, 5), "right", "RV", heart.below_base())
    for _ in range(rng.integers(20, 35)):
        angle = rng.uniform(-1.2, 1.2)
        start = heart.at(rng.uniform(25, 60), 30 + 20 * np.cos(angle), -4 + 26 * np.sin(angle))
        end = start + heart.scale * rng.uniform(8, 16) * _unit(heart.u + rng.normal(size=3) * 0.4)
        scene.add(capsule(start, end, rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)), "myocardium")
    band_u = rng.uniform(45, 55)
    scene.add(capsule(heart.at(band_u, 24, 0), heart.at(band_u, 50, -4), 2.2, 1.8), "myocardium")


def _atria(heart: _Heart) -> None:
    """LA with its four pulmonary veins, RA with the venae cavae, above the base."""
    rng = heart.rng
    la_centre, la_axes = heart.at(-16, -10, 2), heart.axes(22, 22, 26)
    veins = []
    for up in (-1.0, 1.0):
        for side in (-1.0, 1.0):
            direction = _unit(
                up * 0.45 * SUPERIOR - 0.45 * ANTERIOR + side * RIGHT + rng.normal(size=3) * 0.1
            )
            veins.append(
                _Inflow(
                    heart,
                    la_centre,
                    direction,
                    reach=float(la_axes.mean()),
                    radius=rng.uniform(5.5, 8),
                    tissue="left",
                    label="LA",
                )
            )
    appendage = _appendage(
        heart, la_centre, la_axes, ANTERIOR * 0.6 - RIGHT * 0.8 + SUPERIOR * 0.2, rng.uniform(6, 8)
    )
    _chamber(heart, la_centre, la_axes, blood="left", label="LA", veins=veins, appendage=appendage)
    ra_centre, ra_axes = heart.at(-16, 30, -14), heart.axes(22, 22, 24)
    reach = float(ra_axes.mean())
    cavae = [
        _Inflow(
            heart,
            ra_centre,
            _unit(SUPERIOR + 0.1 * rng.normal(size=3)),
            reach=reach,
            radius=rng.uniform(8, 10),
            tissue="right",
            label="RA",
        ),
        _Inflow(
            heart,
            ra_centre,
            _unit(-SUPERIOR + 0.1 * rng.normal(size=3)),
            reach=reach,
            radius=rng.uniform(10, 12),
            tissue="ivc",
            label="RA",
        ),
    ]
    appendage = _appendage(
        heart, ra_centre, ra_axes, ANTERIOR * 0.8 + SUPERIOR * 0.4 - RIGHT * 0.2, rng.uniform(9, 11)
    )
    _chamber(heart, ra_centre, ra_axes, blood="right", label="RA", veins=cavae, appendage=appendage)


def _appendage(
    heart: _Heart, centre: Vector, axes: Vector, direction: Vector, radius: float
) -> list[Part]:
    """An atrial appendage: a lobe leaving the atrium, curving and narrowing."""
    direction = _unit(direction + heart.rng.normal(size=3) * 0.15)
    reach = float(axes.mean())
    bend = _unit(np.cross(direction, heart.u))
    points = [
        centre + direction * reach * 0.6,
        centre + direction * (reach + 12 * heart.scale),
        centre + direction * (reach + 22 * heart.scale) + bend * 10 * heart.scale,
    ]
    return [heart.endocardium(part) for part in tube(points, [radius, radius * 0.5], step=6.0)]


def _chamber(
    heart: _Heart,
    centre: Vector,
    axes: Vector,
    *,
    blood: str,
    label: str,
    veins: list[_Inflow],
    appendage: list[Part],
) -> None:
    """An atrium above the base: veins' walls, the atrium's wall and cavity, then the
    veins' lumens, so that each vein opens into the cavity."""
    scene = heart.scene
    rng = heart.rng
    smooth = clipped(ellipsoid(centre, axes, heart.frame), heart.above_base())
    scene.add(shell(smooth, rng.uniform(4, 7)), "fat")
    for vein in veins:
        vein.walls()
    scene.walled([heart.endocardium(smooth), *appendage], rng.uniform(2, 3), blood, label)
    for vein in veins:
        vein.lumens()
    semi = axes / heart.scale
    for _ in range(rng.integers(8, 16)):  # pectinate muscles along the wall
        direction = _unit(rng.normal(size=3))
        start = centre + heart.scale * 0.88 * (heart.frame.T @ (semi * direction))
        end = start + heart.scale * rng.uniform(6, 14) * _unit(rng.normal(size=3))
        scene.add(capsule(start, end, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)), "myocardium")


class _Inflow:
    """A vein entering a chamber: labelled as the chamber for its first centimetre beyond
    the chamber's mean radius, unlabelled after."""

    def __init__(
        self,
        heart: _Heart,
        centre: Vector,
        direction: Vector,
        *,
        reach: float,
        radius: float,
        tissue: str,
        label: str,
    ) -> None:
        self.scene, self.tissue, self.label = heart.scene, tissue, label
        mouth = centre + direction * reach * 0.5
        joint = centre + direction * (reach + 10 * heart.scale)
        end = centre + direction * (reach + 45 * heart.scale)
        self.proximal = capsule(mouth, joint, radius, radius)
        self.distal = capsule(joint, end, radius, radius * 0.8)
        self.wall = heart.rng.uniform(1.5, 2.5)

    def walls(self) -> None:
        for part in (self.distal, self.proximal):
            self.scene.add(shell(part, self.wall), "wall")

    def lumens(self) -> None:
        self.scene.add(self.distal, self.tissue)
        self.scene.add(self.proximal, self.tissue, self.label)


def _outflows(heart: _Heart) -> None:
    """RV outflow tract to the pulmonary valve and the PA; LV to the aortic valve, AA."""
    scene, rng = heart.scene, heart.rng
    valve = heart.at(-14, 20, 28)
    rvot_start = heart.at(12, 30, 12)
    radius = rng.uniform(11, 13) * heart.scale
    trunk_direction = _unit(SUPERIOR - 0.9 * ANTERIOR + 0.1 * RIGHT + rng.normal(size=3) * 0.1)
    toward_valve = _unit(valve - rvot_start)
    rvot = tube([rvot_start, valve + toward_valve * 4], radius)
    scene.walled(rvot, rng.uniform(3, 4), "right", "RV", half_space(valve, toward_valve))
    fork = valve + trunk_direction * 40 * heart.scale
    trunk = tube([valve - toward_valve * 4, valve + toward_valve * 10, fork], radius)
    scene.walled(heart.lumen(trunk), 1.5, "right", "PA", half_space(valve, -toward_valve))
    for side, reach in ((-1.0, 45.0), (1.0, 70.0)):  # left and right PA
        end = fork + heart.scale * (side * reach * RIGHT - 25 * ANTERIOR - 10 * SUPERIOR)
        middle = fork + 0.5 * (end - fork) + 8 * SUPERIOR
        branch = tube([fork, middle, end], [radius * 0.8, radius * 0.6])
        split = len(branch) // 2
        scene.walled(branch[split:], 1.5, "right", None)
        scene.walled(branch[:split], 1.5, "right", "PA")
    _aorta(heart)


def _aorta(heart: _Heart) -> None:
    scene, rng = heart.scene, heart.rng
    root = heart.at(0, 6, 2)
    radius = rng.uniform(11.5, 14) * heart.scale
    s = heart.scale
    ascending = root + s * (38 * SUPERIOR + 6 * ANTERIOR + 14 * RIGHT)
    arch_top = root + s * (62 * SUPERIOR - 20 * ANTERIOR + 2 * RIGHT)
    arch_end = root + s * (48 * SUPERIOR - 55 * ANTERIOR - 18 * RIGHT)
    inside_lv = root + heart.u * 4
    labelled = tube(
        [inside_lv, ascending, arch_top, arch_end], [radius * 1.1, radius, radius * 0.9]
    )
    bottom = arch_end - np.array([260.0, 8, 4])
    descending = tube([arch_end, arch_end - [40, 6, 2], bottom], radius * 0.85)
    scene.walled(descending, 2.0, "left", None)
    sinuses = [
        ellipsoid(
            root + 0.55 * radius * (np.cos(a) * heart.v + np.sin(a) * heart.w) - heart.u * 6 * s,
            np.full(3, 0.62 * radius),
            heart.frame,
        )
        for a in rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])
    ]
    scene.walled(heart.lumen([*sinuses, *labelled]), 2.0, "left", "AA", heart.above_base())


def _coronaries(heart: _Heart, lv: _LeftVentricle) -> None:
    """LAD down the anterior interventricular groove, LCx and RCA in the AV grooves:
    2-4 mm arteries in the epicardial fat, painted before the chambers they lie on."""
    rng = heart.rng

    def along(angles: NDArray[np.float64], us: NDArray[np.float64], gap: float) -> list[Vector]:
        return [
            heart.at(
                u,
                (lv.outer_radius(max(u, 0.0)) + gap) * np.cos(a),
                (lv.outer_radius(max(u, 0.0)) + gap) * np.sin(a),
            )
            for a, u in zip(angles, us, strict=True)
        ]

    groove = rng.uniform(0.85, 1.05)
    lad = along(np.full(5, groove), np.linspace(0, 85, 5), 2.5)
    lcx = along(np.linspace(groove + 0.4, 3.4, 5), np.full(5, 1.0), 3.0)
    rca = [heart.at(1, 30 + 27 * np.cos(a), -4 + 33 * np.sin(a)) for a in np.linspace(0.5, -1.8, 6)]
    for points, radius in (
        (lad, rng.uniform(1.2, 1.8)),
        (lcx, rng.uniform(1.0, 1.6)),
        (rca, rng.uniform(1.2, 2.0)),
    ):
        for part in tube(points, [radius, radius * 0.6], step=3.0):
            heart.scene.add(part, "left")


def _scanner(
    image: NDArray[np.float32], modality: Modality, rng: np.random.Generator
) -> NDArray[np.float32]:
    """In-plane blur (the scanner's point spread), then the modality's noise."""
    sigma = rng.uniform(0.5, 0.8)
    ndimage.gaussian_filter(image, (0, sigma, sigma), output=image)
    if modality == "ct":
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(
            rng.uniform(15, 40)
        )
        return image
    image *= _bias_field(image.shape, rng)
    sd = np.float32(rng.uniform(0.025, 0.045))
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * sd
    imaginary = rng.standard_normal(image.shape, dtype=np.float32) * sd
    return np.asarray(np.sqrt(real * real + imaginary * imaginary), dtype=np.float32)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float32]:
    """A smooth multiplicative field, exp of a random quadratic, within about ±35%."""
    axes = np.ogrid[tuple(slice(-1, 1, complex(0, n)) for n in shape)]
    field = np.zeros(shape, np.float32)
    for i, a in enumerate(axes):
        field += rng.uniform(-0.2, 0.2) * a + rng.uniform(-0.12, 0.12) * a**2
        for b in axes[i + 1 :]:
            field += rng.uniform(-0.1, 0.1) * a * b
    return np.exp(field, dtype=np.float32)


def case_spacing(
    protocol: Protocol, size: tuple[int, int, int] | None, rng: np.random.Generator
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Voxels (x, y, z) and spacing (z, y, x mm): the protocol's, or ``size`` over its
    field of view."""
    if size is None:
        in_plane = rng.uniform(*protocol.in_plane)
        return protocol.size, (rng.uniform(*protocol.slices), in_plane, in_plane)
    x, y, z = (f / n * rng.uniform(0.95, 1.05) for f, n in zip(protocol.fov, size, strict=True))
    return size, (z, y, x)


HEART_VIEW = 130.0  # mm: a field of view cropped to the heart (the demo's CPU view)
MAX_OFFSET = np.array([10.0, 25.0, 25.0])  # mm (z, y, x): how far a patient lies off-centre


def patient_offset(fov: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """Where the patient (chest and heart together) lies from the field of view's centre,
    (z, y, x) mm: up to 10 mm in z and 25 mm in-plane in a chest-wide view, as patients
    lie on the table, so that a localiser cannot learn one position; none in a view
    cropped to the heart (which stays centred in it), in proportion in between."""
    room = np.clip((fov - HEART_VIEW) / 2, 0, MAX_OFFSET)
    return np.asarray(rng.uniform(-1, 1, 3) * room)


def make_case(
    seed: int,
    number: int,
    modality: Modality = "ct",
    size: tuple[int, int, int] | None = None,
    *,
    protocol: Protocol | None = None,
) -> PhantomCase:
    """Generate case ``number`` of data set ``seed`` (deterministic).

    ``protocol`` (default: the modality's) sets the grid: its voxels and spacing ranges,
    so its field of view. A smaller one crops the chest around the heart, which sits
    near the centre. ``size`` (x, y, z) resamples that field of view to other voxels."""
    if modality not in PROTOCOLS:
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    if size is not None and (len(size) != 3 or min(size) < 16):
        raise ValueError(f"size must be three sizes (x, y, z) of at least 16, got {size}")
    rng = np.random.default_rng([seed, number, 0 if modality == "ct" else 1])
    voxels, spacing = case_spacing(protocol or PROTOCOLS[modality], size, rng)
    shape = (voxels[2], voxels[1], voxels[0])
    fov = np.array(shape) * np.array(spacing)
    # Its own generator: the draws of the anatomy stay those of the same case unshifted.
    position = np.random.default_rng([seed, number, 2 if modality == "ct" else 3])
    centre = fov / 2 + patient_offset(fov, position)
    scene = _Scene(rng)
    _chest(scene, centre, fov)
    base = centre + np.array([rng.uniform(8, 16), rng.uniform(-16, -6), rng.uniform(4, 16)])
    _heart(scene, base)
    canvas = Canvas(shape, spacing, _values(modality, rng))
    canvas.render(scene.shapes)
    image = _scanner(canvas.image, modality, rng)
    if modality == "ct":
        image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    return PhantomCase(f"{modality}_train_{1001 + number}", image, canvas.label, spacing)


def write_case(case: PhantomCase, out_dir: Path, *, compress: bool = True) -> tuple[Path, Path]:
    """Write a case as MM-WHS-style NIfTI in LPS orientation (as DICOM-derived files are),
    gzipped unless ``compress`` is false (big benchmark cases write 3x faster raw).

    The importers reorient it to duoseg's canonical RAS+ (z, y, x) arrays.
    """
    import nibabel as nib

    sz, sy, sx = case.spacing
    nz, ny, nx = case.image.shape
    # (z, y, x) RAS -> nibabel (i, j, k) = (x, y, z), flipped in x and y to LPS.
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (nx - 1) / 2, sy * (ny - 1) / 2, -sz * (nz - 1) / 2]
    paths = []
    for suffix, data in (("image", case.image), ("label", case.label)):
        volume = np.ascontiguousarray(data.transpose(2, 1, 0)[::-1, ::-1, :])
        image = nib.Nifti1Image(volume, affine)
        image.header.set_xyzt_units("mm")
        path = out_dir / f"{case.name}_{suffix}.nii{'.gz' if compress else ''}"
        nib.save(image, path)
        paths.append(path)
    return paths[0], paths[1]


def write_phantoms(
    out_dir: str | Path,
    *,
    cases: int = 4,
    modality: Modality = "ct",
    seed: int = 0,
    size: tuple[int, int, int] | None = None,
    protocol: Protocol | None = None,
    compress: bool = True,
    progress: bool = False,
    first: int = 0,
    workers: int = 1,
) -> list[tuple[Path, Path]]:
    """Generate and write cases ``first .. first + cases - 1`` (``workers`` processes at a
    time); return the (image, label) paths."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = range(first, first + cases)
    job = partial(_write_one, out=out, seed=seed, modality=modality, size=size,
                  protocol=protocol, compress=compress)  # fmt: skip
    bar = partial(tqdm, total=cases, desc="phantoms", unit="case", disable=not progress)
    if workers <= 1:
        return list(bar(map(job, numbers)))
    # Spawned: forking a process whose torch threads run can deadlock the children.
    with ProcessPoolExecutor(min(workers, cases), mp_context=get_context("spawn")) as pool:
        return list(bar(pool.map(job, numbers)))


def _write_one(
    number: int,
    *,
    out: Path,
    seed: int,
    modality: Modality,
    size: tuple[int, int, int] | None,
    protocol: Protocol | None,
    compress: bool,
) -> tuple[Path, Path]:
    case = make_case(seed, number, modality, size, protocol=protocol)
    return write_case(case, out, compress=compress)


def phantom_cache(
    root: str | Path,
    *,
    cases: int,
    size: tuple[int, int, int] | None = None,
    seed: int = 0,
    modality: Modality = "ct",
    chunks: tuple[int, int, int] | None = None,
    levels: dict[str, float] | None = None,
) -> Path:
    """Phantom NIfTI pairs in ``root/src`` built into the Zarr cache ``root/cache.zarr``
    with ``levels`` (``{name: target mm}``; default: the coarse level at 3 mm)."""
    from duoseg.core.data.cache_build import build_cache
    from duoseg.core.records.preprocessing import DEFAULT_LEVELS, Level
    from duoseg.core.registry import load_plugins

    root = Path(root)
    write_phantoms(
        root / "src",
        cases=cases,
        modality=modality,
        seed=seed,
        size=size,
        compress=size is not None and max(size) < 256,
    )
    registry = load_plugins(entry_points=False)
    store = registry.build("store", "zarr", **({"chunks": chunks} if chunks else {}))
    build_cache(
        root / "src",
        root / "cache.zarr",
        importer=registry.build("importer", "mmwhs"),
        store=store,
        levels=DEFAULT_LEVELS if levels is None else [Level(n, t) for n, t in levels.items()],
    )
    return root / "cache.zarr"
