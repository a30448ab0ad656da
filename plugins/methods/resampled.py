"""The paper's baseline: any 3D network on an N mm grid (``train.baseline_spacing``,
2 mm by default), its class probabilities taken back to the original grid with
2nd-order B-splines, slab by slab, as the paper's comparison does.

The grid is the cache's ``baseline`` level at that spacing (``duoseg cache build
--level baseline=2``; :meth:`Resampled.levels` declares it, so ``train`` refuses a
cache without it): training patches are cut from its image and label (area-averaged
and majority-voted once, at cache build), and prediction reads the same level, which
``predict`` computes from a new image as the cache build did. The probabilities written
are the resampled values clipped to [0, 1] and renormalised.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import torch
from duoseg.core.inference.resample import BSplineUpsampler, as_probabilities
from duoseg.core.inference.streaming import per_slice_depth, whole_volume
from duoseg.core.interfaces.method import Model, SlabPredictor
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.records.config import TrainConfig
from duoseg.core.records.preprocessing import Level, Preprocessing
from torch import Tensor

from .patches import PatchNetworkMethod

BASELINE: Final = "baseline"  # the cache level the method works on


class Resampled(PatchNetworkMethod):
    """A 3D network at the baseline spacing, B-spline upsampled (the paper's baseline)."""

    def levels(self, train: TrainConfig) -> tuple[Level, ...]:
        return (Level(BASELINE, train.baseline_spacing),)

    def adapt_sampler(self, kind: str, sampler: Sampler, preprocessing: Preprocessing) -> None:
        # Patches on the network's own grid, their sizes counted there.
        sampler.level = BASELINE

    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor:
        level = case.level(BASELINE)
        image = torch.as_tensor(level.image[...].astype(np.float32), device=model.device)
        scores = model.networks["unet3d"](image[None, None]).float().softmax(1)[0]
        return BSplineSlabs(BSplineUpsampler(scores.cpu().numpy(), case.meta.shape), model.classes)


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
