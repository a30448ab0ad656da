"""The augmentation interface: random transforms of image and label together, on tensors.

Augmentations take a batch - image (b, c, z, y, x) float, label (b, z', y, x)
integer - and run on whatever device holds it. When the label has one slice and
the image more (an axial stack with its central label), transforms act in-plane
only, identically on every slice. Each sample is transformed with ``probability``.

The image's channels share one random draw, so channels stacked onto the image -
a coarse network's guidance beside the intensities - stay aligned with it and the label.
Where a spatial transform reaches past the volume, channel ``i`` is filled with
``fill[i]``: air (-1) for intensities, the background's value for guidance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.sampler import IMAGE_PAD
from torch import Tensor


class Augmentation(ABC):
    def __init__(self, *, probability: float = 1.0) -> None:
        if not 0.0 <= probability <= 1.0:
            raise InputShapeError(f"probability must lie in [0, 1], got {probability}")
        self.probability = probability

    def __call__(
        self,
        image: Tensor,
        label: Tensor,
        generator: torch.Generator,
        fill: Sequence[float] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Transform the chosen samples; ``fill`` gives one value per image channel
        (default: :data:`IMAGE_PAD`, air, for every channel)."""
        name = type(self).__name__
        if image.dim() != 5 or label.dim() != 4:
            raise InputShapeError(
                f"{name}: expects image (b, c, z, y, x) and label (b, z, y, x), got "
                f"{tuple(image.shape)} and {tuple(label.shape)}"
            )
        if label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[3:]:
            raise InputShapeError(
                f"{name}: label {tuple(label.shape)} does not match image {tuple(image.shape)}"
            )
        in_plane = label.shape[1] != image.shape[2]
        if in_plane and label.shape[1] != 1:
            raise InputShapeError(
                f"{name}: label depth {label.shape[1]} must equal the image depth "
                f"{image.shape[2]} or be 1 (a stack's central slice)"
            )
        fill = [IMAGE_PAD] * image.shape[1] if fill is None else list(fill)
        if len(fill) != image.shape[1]:
            raise InputShapeError(
                f"{name}: fill has {len(fill)} value(s) {fill} for an image of "
                f"{image.shape[1]} channel(s)"
            )
        chosen = torch.rand(image.shape[0], generator=generator) < self.probability
        if not bool(chosen.any()):
            return image, label
        index = chosen.nonzero()[:, 0].to(image.device)
        values = torch.tensor(fill, dtype=image.dtype, device=image.device)
        new_image, new_label = self._apply(image[index], label[index], generator, in_plane, values)
        image, label = image.clone(), label.clone()
        image[index], label[index] = new_image.to(image.dtype), new_label.to(label.dtype)
        return image, label

    @abstractmethod
    def _apply(
        self, image: Tensor, label: Tensor, generator: torch.Generator, in_plane: bool, fill: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Transform every sample of a validated batch; ``fill`` is (c,), one value per
        image channel, for voxels that come from outside the volume."""
