"""Synthetic whole-heart phantoms: duoseg's built-in data set.

Each case is a chest with a body outline, lungs, a spine and the seven MM-WHS
structures in a plausible arrangement, written as an MM-WHS-style NIfTI pair
(``ct_train_1001_image.nii.gz`` / ``ct_train_1001_label.nii.gz``):

- the LV blood pool inside a myocardial shell 3.5-5.5 mm thick - two to four voxels
  at the default spacing, so a 3 mm coarse grid cannot resolve it;
- the RV wrapped around the septum (an ellipsoid beside the LV, cut by the myocardium);
- LA and RA behind and above the ventricles' base;
- the aorta and pulmonary artery as curved tubes leaving the LV and RV outflows.

Per case the anatomy varies (sizes, positions, heart pose) and so does the voxel
spacing, which is anisotropic. ``ct`` gives contrast-enhanced CT intensities (all
blood pools at similar HU, so structures are told apart by shape and position, as
in real CTA); ``mr`` gives bSSFP-like contrast with a smooth bias field and Rician
noise. A case is a pure function of (seed, case number, modality, size).

Default size 160 x 128 x 80 voxels at about 1.5 x 1.5 x 2.0 mm (a 240 x 192 x 160
mm field of view, 1.6 M voxels): realistic in shape, small enough to train on a CPU.
``size=(512, 512, 256)`` makes benchmark-sized cases (spacing scaled to keep the FOV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from duoseg.plugins.importers import MMWHS_LABELS  # the phantoms are MM-WHS-style files
from numpy.typing import NDArray
from scipy import ndimage

Modality = Literal["ct", "mr"]

DEFAULT_SIZE = (160, 128, 80)  # x, y, z voxels
DEFAULT_SPACING = (1.5, 1.5, 2.0)  # x, y, z mm at the default size
FOV_MM = tuple(n * s for n, s in zip(DEFAULT_SIZE, DEFAULT_SPACING, strict=True))

# Tissue codes of the intensity model; heart structures use their MM-WHS value.
AIR, SOFT, LUNG, BONE, FAT = 0, 1, 2, 3, 4

Grid = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]


@dataclass(frozen=True)
class PhantomCase:
    """One generated case: arrays are (z, y, x) in RAS+ order (x right, y anterior)."""

    name: str
    image: NDArray[np.int16] | NDArray[np.float32]
    label: NDArray[np.uint16]
    spacing: tuple[float, float, float]  # z, y, x in mm


class _Canvas:
    """Label and tissue volumes painted shape by shape, each within its bounding box."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape = shape
        self.spacing = np.asarray(spacing, dtype=np.float64)  # z, y, x
        self.tissue = np.zeros(shape, np.uint16)
        self.label = np.zeros(shape, np.uint16)

    def grid(self, center: NDArray[np.float64], radius: float) -> tuple[tuple[slice, ...], Grid]:
        """Index box around ``center`` (mm, z/y/x) and the mm coordinates inside it."""
        low = np.floor((center - radius) / self.spacing).astype(int).clip(0, self.shape)
        high = np.ceil((center + radius) / self.spacing).astype(int).clip(0, self.shape) + 1
        box = tuple(slice(lo, min(hi, n)) for lo, hi, n in zip(low, high, self.shape, strict=True))
        axes = [
            (np.arange(b.start, b.stop, dtype=np.float32) * s).reshape(shape)
            for b, s, shape in zip(
                box, self.spacing, ((-1, 1, 1), (1, -1, 1), (1, 1, -1)), strict=True
            )
        ]
        return box, (axes[0], axes[1], axes[2])

    def paint(
        self,
        center: NDArray[np.float64],
        radius: float,
        inside: Callable[[Grid], NDArray[np.bool_]],
        *,
        tissue: int,
        label: int = 0,
        where: Callable[[NDArray[np.uint16]], NDArray[np.bool_]] | None = None,
    ) -> None:
        box, grid = self.grid(center, radius)
        if any(b.stop <= b.start for b in box):
            return
        mask = inside(grid)
        if where is not None:
            mask &= where(self.tissue[box])
        self.tissue[box][mask] = tissue
        self.label[box][mask] = label


def _ellipsoid(
    center: NDArray[np.float64], axes: NDArray[np.float64], rotation: NDArray[np.float64]
) -> Callable[[Grid], NDArray[np.bool_]]:
    """Inside test of an ellipsoid; ``rotation`` rows are its axes in (z, y, x) mm."""

    def inside(grid: Grid) -> NDArray[np.bool_]:
        d = [g - c for g, c in zip(grid, center, strict=True)]
        total = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), np.float32)
        for row, semi in zip(rotation, axes, strict=True):
            # Skipping zero terms keeps axis-aligned shapes separable (small broadcasts).
            q = sum(w * axis for w, axis in zip(row, d, strict=True) if w != 0)
            total += (q / semi) ** 2
        return total <= 1

    return inside


def _half_space(
    point: NDArray[np.float64], normal: NDArray[np.float64]
) -> Callable[[Grid], NDArray[np.bool_]]:
    def inside(grid: Grid) -> NDArray[np.bool_]:
        d = [g - c for g, c in zip(grid, point, strict=True)]
        return np.asarray(normal[0] * d[0] + normal[1] * d[1] + normal[2] * d[2] >= 0)

    return inside


def _both(
    a: Callable[[Grid], NDArray[np.bool_]], b: Callable[[Grid], NDArray[np.bool_]]
) -> Callable[[Grid], NDArray[np.bool_]]:
    return lambda grid: a(grid) & b(grid)


def _rotation(rng: np.random.Generator, degrees: float) -> NDArray[np.float64]:
    """A random rotation of at most about ``degrees`` around a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.asarray(np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k)


def _heart_frame(rng: np.random.Generator) -> NDArray[np.float64]:
    """Rows u (base to apex), v (towards the RV), w, in (z, y, x) components."""
    # RAS+: the apex points to the patient's left (-x), anterior (+y), inferior (-z).
    u = np.array([-0.55, 0.5, -0.6])
    v = np.array([0.2, 0.45, 0.75])
    u /= np.linalg.norm(u)
    v -= u * (u @ v)
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    frame = np.stack([u, v, w]) @ _rotation(rng, 12).T
    return frame


def _tube(
    canvas: _Canvas,
    points: NDArray[np.float64],
    radius: float,
    label: int,
    where: Callable[[NDArray[np.uint16]], NDArray[np.bool_]],
) -> None:
    """A tube of ``radius`` along a quadratic Bezier curve, as overlapping spheres."""
    p0, p1, p2 = points
    length = np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1)
    for t in np.linspace(0, 1, max(2, int(length / (radius / 3)))):
        centre = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        sphere = _ellipsoid(centre, np.full(3, radius), np.eye(3))
        canvas.paint(centre, radius, sphere, tissue=label, label=label, where=where)


def _chest(canvas: _Canvas, rng: np.random.Generator, fov: NDArray[np.float64]) -> None:
    """Body outline, lungs and spine; ``fov`` is (z, y, x) mm."""
    z_len, y_len, x_len = fov
    mid = fov / 2
    body = _ellipsoid(
        mid,
        np.array([10 * z_len, 0.42 * y_len * rng.uniform(0.93, 1.0), 0.47 * x_len]),
        np.eye(3),
    )
    canvas.paint(mid, float(fov.max()), body, tissue=SOFT)

    def inside_body(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return np.asarray(t == SOFT)

    for side in (-1, 1):
        centre = mid + np.array([0.05 * z_len, -0.02 * y_len, side * 0.24 * x_len])
        axes = np.array([0.62 * z_len, 0.33 * y_len, 0.17 * x_len]) * rng.uniform(0.9, 1.05, 3)
        canvas.paint(centre, float(axes.max()), _ellipsoid(centre, axes, np.eye(3)),
                     tissue=LUNG, where=inside_body)  # fmt: skip
    spine_centre = mid + np.array([0.0, -0.3 * y_len, 0.0])
    spine = _ellipsoid(spine_centre, np.array([10 * z_len, 14.0, 16.0]), np.eye(3))
    canvas.paint(spine_centre, float(fov.max()), spine, tissue=BONE)
    canal_centre = spine_centre + np.array([0.0, -17.0, 0.0])
    canal = _ellipsoid(canal_centre, np.array([10 * z_len, 6.0, 6.0]), np.eye(3))
    canvas.paint(canal_centre, float(fov.max()), canal, tissue=SOFT)


def _heart(canvas: _Canvas, rng: np.random.Generator, fov: NDArray[np.float64]) -> None:
    frame = _heart_frame(rng)
    scale = rng.uniform(0.85, 1.1)
    base = fov / 2 + np.array([12.0, 8.0, -8.0]) + rng.uniform(-8, 8, 3)

    def at(u: float, v: float, w: float) -> NDArray[np.float64]:
        return np.asarray(base + scale * (u * frame[0] + v * frame[1] + w * frame[2]))

    def jitter(*axes: float) -> NDArray[np.float64]:
        return np.asarray(scale * np.array(axes) * rng.uniform(0.9, 1.1, 3))

    # The heart displaces lung: its fat envelope overwrites soft tissue and lung alike.
    def soft(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return np.asarray((t == SOFT) | (t == FAT) | (t == LUNG))

    def not_lv(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return np.asarray(t != MMWHS_LABELS["LV"])

    fat_centre = at(18, 8, 0)
    canvas.paint(fat_centre, 85 * scale, _ellipsoid(fat_centre, jitter(70, 62, 58), frame),
                 tissue=FAT, where=soft)  # fmt: skip

    def heart_tissue(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return np.asarray((t == SOFT) | (t == FAT) | (t >= 100))

    below_base = _half_space(base, frame[0])

    def structure(
        name: str, centre: NDArray[np.float64], axes: NDArray[np.float64],
        where: Callable[[NDArray[np.uint16]], NDArray[np.bool_]], ventricle: bool = False,
    ) -> None:  # fmt: skip
        shape = _ellipsoid(centre, axes, frame)
        inside = _both(shape, below_base) if ventricle else shape
        value = MMWHS_LABELS[name]
        canvas.paint(centre, float(axes.max()), inside, tissue=value, label=value, where=where)

    structure("RA", at(-20, 32, -6), jitter(20, 18, 20), heart_tissue)
    structure("LA", at(-22, -8, -16), jitter(18, 20, 15), heart_tissue)
    structure("RV", at(30, 24, 6), jitter(34, 19, 26), heart_tissue, ventricle=True)

    def outflow(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return np.asarray(heart_tissue(t) & (t != MMWHS_LABELS["RA"]))

    aorta = np.stack([at(2, 6, 6), at(-34, 12, 14), at(-62, -6, -22)])
    _tube(canvas, aorta, 12.5 * scale * rng.uniform(0.9, 1.1), MMWHS_LABELS["AA"], outflow)
    pulmonary = np.stack([at(8, 30, 20), at(-26, 22, 34), at(-48, -6, 18)])
    _tube(canvas, pulmonary, 11.0 * scale * rng.uniform(0.9, 1.1), MMWHS_LABELS["PA"], outflow)
    lv_centre, lv_axes = at(36, 0, 0), jitter(36, 18, 18)
    wall = rng.uniform(3.5, 5.5)

    def myocardium(t: NDArray[np.uint16]) -> NDArray[np.bool_]:
        return heart_tissue(t) & not_lv(t)

    structure("Myo", lv_centre, lv_axes + wall, myocardium, ventricle=True)
    structure("LV", lv_centre, lv_axes, heart_tissue, ventricle=True)


def _intensities(
    tissue: NDArray[np.uint16], modality: Modality, rng: np.random.Generator
) -> NDArray[np.float32]:
    if modality == "ct":
        table = {AIR: -1000.0, SOFT: 45.0, LUNG: -840.0, BONE: 650.0, FAT: -95.0,
                 MMWHS_LABELS["Myo"]: 115.0}  # fmt: skip
        left, right = rng.uniform(320, 380), rng.uniform(260, 330)
        for name in ("LV", "LA", "AA"):
            table[MMWHS_LABELS[name]] = left + rng.uniform(-12, 12)
        for name in ("RV", "RA", "PA"):
            table[MMWHS_LABELS[name]] = right + rng.uniform(-12, 12)
    else:
        table = {AIR: 0.0, SOFT: 0.33, LUNG: 0.07, BONE: 0.22, FAT: 0.85,
                 MMWHS_LABELS["Myo"]: 0.28}  # fmt: skip
        for name in ("LV", "LA", "AA", "RV", "RA", "PA"):
            table[MMWHS_LABELS[name]] = rng.uniform(0.82, 0.95)
    lookup = np.zeros(int(tissue.max()) + 1, np.float32)
    for code, value in table.items():
        if code < lookup.size:
            lookup[code] = value
    return lookup[tissue]


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float32]:
    """A smooth multiplicative field, exp of a random quadratic, within about ±35%."""
    axes = np.ogrid[tuple(slice(-1, 1, complex(0, n)) for n in shape)]
    field = np.zeros(shape, np.float32)
    for i, a in enumerate(axes):
        field += rng.uniform(-0.2, 0.2) * a + rng.uniform(-0.12, 0.12) * a**2
        for b in axes[i + 1 :]:
            field += rng.uniform(-0.1, 0.1) * a * b
    return np.exp(field, dtype=np.float32)


def _texture(image: NDArray[np.float32], modality: Modality, rng: np.random.Generator,
             shape: tuple[int, ...]) -> NDArray[np.float32]:  # fmt: skip
    """Partial-volume blur, then modality noise."""
    image = ndimage.gaussian_filter(image, 0.6, output=np.float32)
    if modality == "ct":
        image += rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(12, 25))
        return image
    image *= _bias_field(shape, rng)
    sigma = np.float32(rng.uniform(0.025, 0.045))
    real = image + rng.standard_normal(shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(shape, dtype=np.float32) * sigma
    return np.asarray(np.sqrt(real * real + imaginary * imaginary), dtype=np.float32)


def make_case(
    seed: int,
    number: int,
    modality: Modality = "ct",
    size: tuple[int, int, int] = DEFAULT_SIZE,
) -> PhantomCase:
    """Generate case ``number`` of data set ``seed`` (deterministic)."""
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    if len(size) != 3 or min(size) < 16:
        raise ValueError(f"size must be three sizes (x, y, z) of at least 16, got {size}")
    rng = np.random.default_rng([seed, number, 0 if modality == "ct" else 1])
    scale = [d / n for d, n in zip(DEFAULT_SIZE, size, strict=True)]
    spacing_xyz = [
        s * k * rng.uniform(0.92, 1.08) for s, k in zip(DEFAULT_SPACING, scale, strict=True)
    ]
    spacing = (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])
    shape = (size[2], size[1], size[0])
    fov = np.array(shape) * np.array(spacing)
    canvas = _Canvas(shape, spacing)
    _chest(canvas, rng, fov)
    _heart(canvas, rng, fov)
    image = _texture(_intensities(canvas.tissue, modality, rng), modality, rng, shape)
    if modality == "ct":
        image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    return PhantomCase(
        name=f"{modality}_train_{1001 + number}",
        image=image,
        label=canvas.label,
        spacing=spacing,
    )


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
    size: tuple[int, int, int] = DEFAULT_SIZE,
    compress: bool = True,
    progress: bool = False,
    first: int = 0,
) -> list[tuple[Path, Path]]:
    """Generate and write cases ``first .. first + cases - 1``; return the (image, label)
    paths."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = tqdm(range(first, first + cases), desc="phantoms", unit="case", disable=not progress)
    return [write_case(make_case(seed, n, modality, size), out, compress=compress) for n in numbers]


def phantom_cache(
    root: str | Path,
    *,
    cases: int,
    size: tuple[int, int, int] = DEFAULT_SIZE,
    seed: int = 0,
    modality: Modality = "ct",
    chunks: tuple[int, int, int] | None = None,
) -> Path:
    """Phantom NIfTI pairs in ``root/src`` built into the Zarr cache ``root/cache.zarr``."""
    from duoseg.core.data.cache_build import build_cache
    from duoseg.core.registry import load_plugins

    root = Path(root)
    write_phantoms(root / "src", cases=cases, modality=modality, seed=seed, size=size,
                   compress=max(size) < 256)  # fmt: skip
    registry = load_plugins(entry_points=False)
    store = registry.build("store", "zarr", **({"chunks": chunks} if chunks else {}))
    build_cache(
        root / "src", root / "cache.zarr", importer=registry.build("importer", "mmwhs"), store=store
    )
    return root / "cache.zarr"
