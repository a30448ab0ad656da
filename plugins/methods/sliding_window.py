"""A full-resolution 3D patch network (nnU-Net's 3d_fullres, MONAI's sliding window):
trained on full-resolution patches, predicting with Gaussian-weighted overlapping
windows streamed down z (:class:`~duoseg.core.inference.windows.StreamedWindows`), so memory is
flat in the volume's depth where MONAI's ``sliding_window_inference`` holds the whole
C x D x H x W sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from duoseg.core.errors import ConfigError
from duoseg.core.inference.windows import StreamedWindows, WindowSlabs
from duoseg.core.interfaces.method import Model, SlabPredictor
from duoseg.core.interfaces.sampler import IMAGE_PAD, read_padded
from duoseg.core.interfaces.store import CacheCase
from torch import Tensor

from .patches import PatchNetworkMethod


@dataclass(frozen=True)
class WindowOptions:
    """Prediction options; each replaces the method's own setting when given."""

    window: list[int] | None = None  # voxels (z, y, x)
    overlap: float | None = None  # fraction shared by neighbouring windows
    batch: int | None = None  # windows per forward pass

    def __post_init__(self) -> None:
        if self.window is not None:
            _window(self.window, "window")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ValueError(f"overlap = {self.overlap} must lie in [0, 1)")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch = {self.batch} must be >= 1")


class SlidingWindow(PatchNetworkMethod):
    """A 3D network on full-resolution windows, Gaussian-blended, streamed in slabs.

    Args:
        window: window size in voxels (z, y, x); the training patches' size suits.
        overlap: fraction of a window shared with its neighbour along each axis.
        batch: windows per forward pass.
        sigma_scale: the Gaussian's sigma as a fraction of the window (nnU-Net: 1/8).
    """

    prediction_options = WindowOptions

    def __init__(
        self,
        *,
        window: Sequence[int] = (128, 128, 128),
        overlap: float = 0.5,
        batch: int = 2,
        sigma_scale: float = 0.125,
    ) -> None:
        self.window = _window(window, "method.params.window")
        if not 0 <= overlap < 1:
            raise ConfigError(f"method.params.overlap = {overlap} must lie in [0, 1)")
        if batch < 1:
            raise ConfigError(f"method.params.batch = {batch} must be >= 1")
        if not sigma_scale > 0:
            raise ConfigError(f"method.params.sigma_scale = {sigma_scale} must be > 0")
        self.overlap, self.batch, self.sigma_scale = overlap, batch, sigma_scale

    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor:
        window = self.window if options.window is None else _window(options.window, "window")
        network = model.networks["unet3d"]

        def read(origin: tuple[int, int, int], size: tuple[int, int, int]) -> Tensor:
            image = read_padded(case.image, origin, size, IMAGE_PAD)
            return torch.as_tensor(image, dtype=torch.float32)[None]

        def forward(x: Tensor) -> Tensor:
            scores: Tensor = network(x)
            return scores.float().softmax(1)

        windows = StreamedWindows(
            case.meta.shape,
            window,
            read=read,
            forward=forward,
            classes=model.classes,
            overlap=self.overlap if options.overlap is None else options.overlap,
            batch=self.batch if options.batch is None else options.batch,
            sigma_scale=self.sigma_scale,
            device=model.device,
        )
        return WindowSlabs(windows, network)


def _window(window: Sequence[int], key: str) -> tuple[int, int, int]:
    sizes = [int(n) for n in window]
    if len(sizes) != 3 or min(sizes) < 1:
        raise ConfigError(f"{key} = {list(window)} must be three sizes >= 1 (z, y, x)")
    return (sizes[0], sizes[1], sizes[2])
