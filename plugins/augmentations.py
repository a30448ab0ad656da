"""Augmentations (the paper's): one random affine (rotation, translation, shear,
scale), flips, and elastic deformation. Images are interpolated linearly, labels
by nearest neighbour; the space outside the volume is each image channel's fill
value (air, -1, for intensities) and background (0) in the label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from duoseg.core import Component, hookimpl
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.augmentation import Augmentation
from torch import Tensor

AXES = {"z": 2, "y": 3, "x": 4}


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def resample(
    image: Tensor, label: Tensor, grid: Tensor, in_plane: bool, fill: Tensor
) -> tuple[Tensor, Tensor]:
    """Sample image (linear) and label (nearest) at ``grid`` (normalised coordinates);
    image channel ``i`` reads ``fill[i]`` outside the volume (zero padding of the
    image shifted by its fill)."""
    shift = fill.reshape(1, -1, 1, 1, 1)
    if in_plane:  # (b, c, z, y, x) as (b, c*z, y, x) images; the label is one slice
        b, c, z, h, w = image.shape
        flat = (image - shift).reshape(b, c * z, h, w)
        moved = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False).reshape(b, c, z, h, w) + shift  # fmt: skip
        labels = F.grid_sample(label.float(), grid, mode="nearest", align_corners=False)
        return moved, labels.round().to(label.dtype)
    moved = F.grid_sample(image - shift, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) + shift  # fmt: skip
    labels = F.grid_sample(label[:, None].float(), grid, mode="nearest", align_corners=False)
    return moved, labels[:, 0].round().to(label.dtype)


class RandomAffine(Augmentation):
    """One affine per sample: rotation (degrees per axis), translation (fraction of the
    extent), shear and isotropic scale, composed as ``R @ Sh @ S`` plus translation.
    In-plane for stacks (rotation about z only)."""

    def __init__(
        self,
        *,
        degrees: float = 15.0,
        translate: float = 0.05,
        shear: float = 0.05,
        scale: Sequence[float] = (0.9, 1.1),
        probability: float = 1.0,
    ) -> None:
        super().__init__(probability=probability)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise InputShapeError(
                f"scale must be (low, high) with 0 < low <= high, got {list(scale)}"
            )
        self.degrees, self.translate, self.shear = degrees, translate, shear
        self.scale = (float(scale[0]), float(scale[1]))

    def _matrix(self, n: int, dims: int, generator: torch.Generator) -> Tensor:
        angles = _uniform(generator, (n, 3 if dims == 3 else 1), -self.degrees, self.degrees)
        rotation = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
        planes = [(0, 1), (0, 2), (1, 2)] if dims == 3 else [(0, 1)]
        for i, (a, b) in enumerate(planes):
            theta = angles[:, i] * math.pi / 180
            step = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
            step[:, a, a], step[:, b, b] = theta.cos(), theta.cos()
            step[:, a, b], step[:, b, a] = -theta.sin(), theta.sin()
            rotation = rotation @ step
        shear = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
        off = ~torch.eye(dims, dtype=torch.bool)
        shear[:, off] = _uniform(generator, (n, dims * dims - dims), -self.shear, self.shear)
        scale = _uniform(generator, (n, 1, 1), *self.scale)
        shift = _uniform(generator, (n, dims, 1), -2 * self.translate, 2 * self.translate)
        return torch.cat((rotation @ shear / scale, shift), 2)

    def _apply(
        self, image: Tensor, label: Tensor, generator: torch.Generator, in_plane: bool, fill: Tensor
    ) -> tuple[Tensor, Tensor]:
        n = image.shape[0]
        theta = self._matrix(n, 2 if in_plane else 3, generator).to(image.device, image.dtype)
        size = (n, 1, *image.shape[3:]) if in_plane else (n, 1, *image.shape[2:])
        grid = F.affine_grid(theta, list(size), align_corners=False)
        return resample(image, label, grid, in_plane, fill)


class RandomFlip(Augmentation):
    """Flip along each of ``axes`` with probability 1/2 (z is never flipped in-plane)."""

    def __init__(self, *, axes: Sequence[str] = ("y", "x"), probability: float = 1.0) -> None:
        super().__init__(probability=probability)
        unknown = [a for a in axes if a not in AXES]
        if unknown:
            raise InputShapeError(f"flip axes must be among z, y, x, got {list(axes)}")
        self.axes = tuple(axes)

    def _apply(
        self, image: Tensor, label: Tensor, generator: torch.Generator, in_plane: bool, fill: Tensor
    ) -> tuple[Tensor, Tensor]:
        image, label = image.clone(), label.clone()
        for axis in self.axes:
            if in_plane and axis == "z":
                continue
            flip = torch.rand(image.shape[0], generator=generator) < 0.5
            for i in flip.nonzero()[:, 0].tolist():
                image[i] = image[i].flip(AXES[axis] - 1)
                label[i] = label[i].flip(AXES[axis] - 2)
        return image, label


class ElasticDeformation(Augmentation):
    """A smooth random displacement field: a grid of ``control_points`` per axis, each
    displaced by up to ``magnitude`` (fraction of the extent), interpolated (bi- or
    trilinearly) to every voxel."""

    def __init__(
        self, *, control_points: int = 5, magnitude: float = 0.03, probability: float = 1.0
    ) -> None:
        super().__init__(probability=probability)
        if control_points < 2 or magnitude < 0:
            raise InputShapeError(
                f"need control_points >= 2 and magnitude >= 0, got {control_points}, {magnitude}"
            )
        self.control_points, self.magnitude = control_points, magnitude

    def _apply(
        self, image: Tensor, label: Tensor, generator: torch.Generator, in_plane: bool, fill: Tensor
    ) -> tuple[Tensor, Tensor]:
        n, dims = image.shape[0], 2 if in_plane else 3
        spatial = image.shape[3:] if in_plane else image.shape[2:]
        shape = (n, dims, *(self.control_points,) * dims)
        coarse = _uniform(generator, shape, -2 * self.magnitude, 2 * self.magnitude)
        coarse = coarse.to(image.device, image.dtype)
        mode = "bilinear" if in_plane else "trilinear"
        field = F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=True)
        identity = torch.eye(dims, dims + 1, dtype=image.dtype, device=image.device)
        grid = F.affine_grid(identity.repeat(n, 1, 1), [n, 1, *spatial], align_corners=False)
        grid = grid + field.movedim(1, -1)
        return resample(image, label, grid, in_plane, fill)


@hookimpl
def duoseg_augmentation() -> list[Component]:
    return [
        Component("affine", RandomAffine, "Random rotation, translation, shear and scale"),
        Component("flip", RandomFlip, "Random flips along chosen axes"),
        Component("elastic", ElasticDeformation, "Smooth random elastic deformation"),
    ]
