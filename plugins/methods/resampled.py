"""The paper's baseline: any 3D network on an N mm grid (``train.baseline_spacing``,
2 mm by default), its class probabilities taken back to the original grid with
2nd-order B-splines, slab by slab, as the paper's comparison does.

Training patches are read at full resolution and resampled to that grid (area for
the image, majority for the label), as the whole volume is at prediction. The
probabilities written are the resampled values clipped to [0, 1] and renormalised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from duoseg.core.data.grid import area_downsample, grid_shape
from duoseg.core.errors import PredictError
from duoseg.core.inference.resample import BSplineUpsampler, as_probabilities
from duoseg.core.inference.streaming import per_slice_depth, whole_volume
from duoseg.core.interfaces.method import Model, SlabPredictor
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.records.preprocessing import Preprocessing
from torch import Tensor

from .patches import PatchNetworkMethod


class Resampled(PatchNetworkMethod):
    """A 3D network at the baseline spacing, B-spline upsampled (the paper's baseline)."""

    def adapt_sampler(self, kind: str, sampler: Sampler, preprocessing: Preprocessing) -> None:
        # Patches on the network's own grid, their sizes counted there.
        sampler.grid_mm = preprocessing.baseline_spacing

    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor:
        meta = case.meta
        target = model.preprocessing.baseline_spacing
        if target is None:
            raise PredictError(
                f"{meta.case_id}: the model's preprocessing records no baseline_spacing"
            )
        image = torch.as_tensor(case.image[...].astype(np.float32), device=model.device)
        small = area_downsample(image[None, None], grid_shape(meta.shape, meta.spacing, target))
        del image
        scores = model.networks["unet3d"](small).float().softmax(1)[0]
        return BSplineSlabs(BSplineUpsampler(scores.cpu().numpy(), meta.shape), model.classes)


class BSplineSlabs(SlabPredictor):
    """Coarse probabilities evaluated on full-resolution slabs with quadratic B-splines."""

    def __init__(self, upsampler: BSplineUpsampler, classes: int) -> None:
        super().__init__(whole_volume(upsampler.shape))
        self.upsampler, self.classes = upsampler, classes

    def depth(self, budget_mib: float) -> int:
        shape = self.upsampler.shape
        return per_slice_depth((shape[1], shape[2]), self.classes, budget_mib)

    def step(self, z0: int, z1: int) -> Tensor:
        return as_probabilities(self.upsampler.slab(z0, z1))  # B-splines overshoot [0, 1]
