"""The two-stage model of Wang et al. (STACOM 2018): Net1 on the whole coarse volume,
the dynamic tile around its foreground, Net2 labelling each full-resolution axial
slice from K neighbours, guided by Net1's output.

Stage kinds (the paper's four steps, schedule ``wang2018``)::

    net1_coarse     Net1 on whole coarse volumes                 L_ROI(Net1) (step 1;
                                                                 + L(Net1) as step 2 with
                                                                 coarse_views = "whole")
    net1_subvolume  Net1 on subvolumes seen at coarse spacing    L_ROI(Net1) + L(Net1)
    end_to_end      Net1 + Net2 on subvolumes                    L(Net1) + L(Net2)
    net2_stacks     Net2 on K-slice stacks, Net1 frozen          L(Net2)

At inference Net2 runs down z in slabs: a slab of D output slices reads D + K - 1
input slices of the tile, and Net2's z-equivariance makes that one pass exact. D comes
from Net2's FLOP and memory accounting for the tile's in-plane size and the budget.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from duoseg.core.accounting import network_cost
from duoseg.core.data.grid import (
    area_downsample,
    background,
    class_fractions,
    grid_shape,
    slice_length,
    upsample_box,
)
from duoseg.core.errors import ConfigError, PredictError
from duoseg.core.inference.postprocess import largest_component
from duoseg.core.inference.streaming import most_probable, per_slice_depth, whole_volume
from duoseg.core.interfaces.method import (
    Method,
    Model,
    Part,
    PredictLabels,
    Region,
    SlabPredictor,
    TrainingContext,
    validation_label,
)
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import IMAGE_PAD, read_padded
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.config import TrainConfig
from duoseg.core.records.preprocessing import COARSE, Level
from numpy.typing import NDArray
from torch import Tensor, nn

from .guidance import Guidance, guidance_for, guide, outside_guidance

log = logging.getLogger("duoseg.two_stage")
MIN_COARSE = 4  # voxels per axis below which Net1 sees no anatomy to localise


@dataclass(frozen=True)
class TwoStageOptions:
    """Prediction options of the two-stage model."""

    threshold: float = 0.5  # foreground probability that makes Net1's ROI
    margin_mm: float = 10.0  # added around the ROI on every side
    # ROI from Net1's largest foreground component only: on whole-chest views stray
    # foreground far from the heart otherwise widens the tile to most of the volume
    # (docs/whole_scans.md)
    largest_component: bool = True
    flip_tta: bool = False  # average Net2 scores with the in-plane flipped input
    net1_only: bool = False  # Net1's upsampled labels (the paper's "Net1" rows), no Net2
    roi: list[list[int]] | None = None  # [[z0, z1], [y0, y1], [x0, x1]]: a fixed tile

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold = {self.threshold} must lie in (0, 1)")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm = {self.margin_mm} must be >= 0")
        if self.roi is not None and [len(a) for a in self.roi] != [2, 2, 2]:
            raise ValueError(f"roi = {self.roi} must be [[z0, z1], [y0, y1], [x0, x1]]")

    def tile(self, shape: tuple[int, ...], where: str) -> Region | None:
        """The fixed tile, checked against the volume's ``shape``."""
        if self.roi is None:
            return None
        for axis, ((low, high), n) in enumerate(zip(self.roi, shape, strict=True)):
            if not 0 <= low < high <= n:
                raise PredictError(
                    f"{where}: method option roi = {self.roi}: axis {'zyx'[axis]} "
                    f"[{low}, {high}) must satisfy 0 <= start < stop <= {n}"
                )
        (z0, z1), (y0, y1), (x0, x1) = self.roi
        return (slice(z0, z1), slice(y0, y1), slice(x0, x1))


@torch.no_grad()
def net1_probabilities(net1: nn.Module, coarse_image: NDArray[np.floating], device: str) -> Tensor:
    """Net1's class probabilities (C+1, z, y, x) on a whole coarse volume."""
    x = torch.as_tensor(np.asarray(coarse_image, dtype=np.float32), device=device)[None, None]
    scores: Tensor = net1.eval()(x)
    return scores.float().softmax(1)[0]


def dynamic_tile(
    foreground: NDArray[np.floating], meta: CaseMeta, options: TwoStageOptions
) -> tuple[Region, bool]:
    """The full-resolution box around Net1's foreground (plus the margin), and whether
    the foreground was empty - then the whole volume is used, with a warning."""
    mask = foreground > options.threshold
    if options.largest_component:
        mask = largest_component(mask)
    if not mask.any():
        log.warning(
            "%s: Net1 found no foreground above %.2f; predicting the whole volume",
            meta.case_id,
            options.threshold,
        )
        return whole_volume(meta.shape), True
    box = []
    for axis, (n, c, s) in enumerate(zip(meta.shape, meta.coarse.shape, meta.spacing, strict=True)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = math.ceil(options.margin_mm / s)
        low = math.floor(hits[0] * n / c) - margin
        high = math.ceil((hits[-1] + 1) * n / c) + margin
        box.append(slice(max(low, 0), min(high, n)))
    return (box[0], box[1], box[2]), False


def flip_averaged(net2: SegmentationNetwork, x: Tensor, tta: bool) -> Tensor:
    """Net2's class probabilities, averaged with those of the x- and y-flipped input."""
    scores: Tensor = net2(x).float().softmax(1)
    if not tta:
        return scores
    for dims in ((-1,), (-2,)):
        flipped: Tensor = net2(x.flip(dims))
        scores += flipped.float().softmax(1).flip(dims)
    return scores / 3


def net2_k(net2: SegmentationNetwork) -> int:
    """Net2's slices per prediction (its ``k``)."""
    k = getattr(net2, "k", None)
    if not isinstance(k, int):
        raise ConfigError(
            f"networks.net2 ({type(net2).__name__}) has no integer k: the slices it reads "
            "per labelled slice"
        )
    return k


def slab_depth(
    net2: SegmentationNetwork, in_plane: tuple[int, int], budget_mib: float, classes: int
) -> int:
    """Output slices per slab that fit the budget, from Net2's activation accounting
    (a slab of D output slices reads D + K - 1).

    Peak memory is affine in the slab depth D (activations, input, guidance, scores):
    measured on the meta device at two depths, then solved for D."""

    def cost(depth: int) -> float:
        channels, context = net2.in_channels, net2_k(net2) - 1
        peak = network_cost(net2, (1, channels, depth + context, *in_plane))
        voxels = in_plane[0] * in_plane[1]
        # Per input slice: the input and, while it is assembled, the guidance and its
        # whole-plane upsampling (at most twice the box): 3x the channels; per output
        # slice: the class probabilities.
        buffers = voxels * ((depth + context) * 3 * channels + depth * (classes + 1)) * 4
        return float(peak.peak_activation_bytes + buffers)

    per_slice = (cost(16) - cost(8)) / 8
    fixed = cost(8) - 8 * per_slice
    depth = int((budget_mib * 2**20 - fixed) // per_slice)
    return max(1, min(depth, 512))


class TwoStage(Method):
    """Net1 -> dynamic tile -> Net2 (the paper's model)."""

    roles = ("net1", "net2")
    stage_kinds = ("net1_coarse", "net1_subvolume", "end_to_end", "net2_stacks")
    final_kinds = ("end_to_end", "net2_stacks")  # before them, validation scores Net1 alone
    prediction_options = TwoStageOptions

    def __init__(self, *, coarse_cache_cases: int = 64, coarse_mm: float | None = None) -> None:
        """``coarse_cache_cases``: step 4 keeps Net1's guidance on the whole coarse volume
        of at most this many cases (the most recently used; a few MB each), so its memory
        stops growing with the data set there. ``coarse_mm``: the target spacing Net1's
        ``coarse`` level must have (``train`` and ``predict`` refuse another); by
        default whatever the cache was built with (``--level coarse=MM``, 3 mm)."""
        if coarse_cache_cases < 1:
            raise ConfigError(
                f"method.params.coarse_cache_cases = {coarse_cache_cases} must be >= 1"
            )
        if coarse_mm is not None and not coarse_mm > 0:
            raise ConfigError(f"method.params.coarse_mm = {coarse_mm} must be > 0")
        self.coarse_cache_cases = coarse_cache_cases
        self.coarse_mm = coarse_mm
        # Net1's guidance per case for the current Net1 weights (its hash), oldest first.
        self._coarse: OrderedDict[tuple[str, str], Tensor] = OrderedDict()

    # ------------------------------------------------------------------ checks

    def levels(self, train: TrainConfig) -> tuple[Level, ...]:
        return () if self.coarse_mm is None else (Level(COARSE, self.coarse_mm),)

    def _check(
        self, networks: Mapping[str, SegmentationNetwork], schedule: Schedule | None
    ) -> None:
        net2 = networks["net2"]
        guidance_for(net2)
        k = net2_k(net2)
        for index, stage in enumerate(schedule.stages if schedule else ()):
            sampled = stage.sampler.params.get("k")
            if sampled is not None and sampled != k:
                raise ConfigError(
                    f"schedule.stages[{index}] samples stacks of k={sampled} but "
                    f"networks.net2 has k={k}"
                )

    # ------------------------------------------------------------------ training

    def _forward(
        self, kind: str, batch: Mapping[str, Any], context: TrainingContext
    ) -> dict[str, list[Part]]:
        net1, net2 = context.networks["net1"], context.networks["net2"]
        image, label = batch["image"], batch["label"]
        classes = context.preprocessing.classes
        if kind == "net2_stacks":
            # Net1's guidance joins the image before augmentation: one draw moves both.
            guidance = self._stack_guidance(batch, image.shape[2:], context).to(image)
            fill = [IMAGE_PAD, *outside_guidance(guidance_for(net2), classes)]
            x, label = context.augment(torch.cat((image, guidance), 1), label, fill)
            return {"net2": [(net2(x), label)]}
        image, label = context.augment(image, label, [IMAGE_PAD])
        if kind == "net1_coarse":
            return {"net1": [(net1(image), label)]}
        outputs: dict[str, list[Part]] = {"net1": [], "net2": []}
        for index, grid in _coarse_grids(batch["case_id"], image.shape[2:], context):
            net1_scores = net1(area_downsample(image[index], grid))
            outputs["net1"].append((net1_scores, class_fractions(label[index], grid, classes)))
            if kind == "end_to_end":
                k, size, form = net2_k(net2), image.shape[2:], guidance_for(net2)
                fill = outside_guidance(form, classes)
                coarse = guide(net1_scores.float().softmax(1), form)  # linear: then upsample
                guides = torch.stack([upsample_box(g, size, (0, 0, 0), size, fill) for g in coarse])
                scores = net2(torch.cat((image[index], guides.to(image)), 1))
                outputs["net2"].append((scores, label[index, k // 2 : label.shape[1] - k // 2]))
        return outputs

    def _stack_guidance(
        self, batch: Mapping[str, Any], size: tuple[int, ...], context: TrainingContext
    ) -> Tensor:
        """Net1's guidance channels under each stack, upsampled from its coarse output
        per sample (the coarse output is kept per case: it is small)."""
        net1, net2 = context.networks["net1"], context.networks["net2"]
        guidance = guidance_for(net2)
        key = _weights_hash(net1)
        fill = outside_guidance(guidance, context.preprocessing.classes)
        boxes = []
        for case_id, origin in zip(batch["case_id"], batch["origin"].tolist(), strict=True):
            coarse_guidance = self._cached_guidance(key, case_id, context, guidance)
            shape = context.metas[case_id].shape
            boxes.append(upsample_box(coarse_guidance, shape, origin, size, fill))
        return torch.stack(boxes)

    def _cached_guidance(
        self, key: str, case_id: str, context: TrainingContext, guidance: Guidance
    ) -> Tensor:
        """Net1's guidance on a case's whole coarse volume, computed once per case and
        Net1 weights, least recently used dropped first."""
        if (key, case_id) in self._coarse:
            self._coarse.move_to_end((key, case_id))
            return self._coarse[(key, case_id)]
        for stale in [k for k in self._coarse if k[0] != key]:  # Net1 changed since
            del self._coarse[stale]
        net1 = context.networks["net1"]
        coarse = context.cache.case(case_id).coarse_image[...]
        probabilities = net1_probabilities(net1, coarse, str(context.device))
        self._coarse[(key, case_id)] = guide(probabilities, guidance)
        while len(self._coarse) > self.coarse_cache_cases:
            self._coarse.popitem(last=False)
        return self._coarse[(key, case_id)]

    def validate(
        self, kind: str, model: Model, case: CacheCase, predict: PredictLabels
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """After a stage that trains Net2: the prediction itself. Before: Net1's labels
        on the coarse volume against the coarse label."""
        if self.scores_final(kind):
            return super().validate(kind, model, case, predict)
        target = validation_label(case.coarse_label, case.case_id)
        net1 = model.networks["net1"]
        probabilities = net1_probabilities(net1, case.coarse_image[...], str(model.device))
        return most_probable(probabilities).cpu().numpy(), target

    # ------------------------------------------------------------------ inference

    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor:
        start, meta = time.perf_counter(), case.meta
        if min(meta.coarse.shape) < MIN_COARSE:
            raise PredictError(
                f"{meta.case_id}: spacing {tuple(round(s, 3) for s in meta.spacing)} mm x "
                f"shape {meta.shape} gives a coarse volume {meta.coarse.shape} at "
                f"{meta.coarse.target_mm} mm; Net1 needs at least {MIN_COARSE} voxels per axis"
            )
        net1, net2 = model.networks["net1"], model.networks["net2"]
        probabilities = net1_probabilities(net1, case.coarse_image[...], str(model.device))
        if options.net1_only:
            predictor: SlabPredictor = Net1Upsampled(probabilities, case.meta)
        else:
            roi = options.tile(meta.shape, meta.case_id)
            empty = False
            if roi is None:
                foreground = (1 - probabilities[0]).cpu().numpy()
                roi, empty = dynamic_tile(foreground, meta, options)
            predictor = Net2Slabs(model, case, guide(probabilities, guidance_for(net2)), roi)
            predictor.flip_tta = options.flip_tta
            predictor.details["empty_foreground"] = empty
        predictor.details["net1_seconds"] = time.perf_counter() - start
        return predictor


class Net2Slabs(SlabPredictor):
    """Net2 over the tile, slab by slab, its guidance upsampled from Net1 per slab."""

    def __init__(self, model: Model, case: CacheCase, guidance: Tensor, roi: Region) -> None:
        super().__init__(roi)
        self.model, self.case, self.guidance = model, case, guidance
        self.net2 = model.networks["net2"]
        self.k = net2_k(self.net2)
        self.flip_tta = False
        self.outside = outside_guidance(guidance_for(self.net2), model.classes)

    def depth(self, budget_mib: float) -> int:
        in_plane = (slice_length(self.region[1]), slice_length(self.region[2]))
        return slab_depth(self.net2, in_plane, budget_mib, self.model.classes)

    def step(self, z0: int, z1: int) -> Tensor:
        half, roi, shape = self.k // 2, self.region, self.case.meta.shape
        origin = (z0 - half, roi[1].start, roi[2].start)
        size = (z1 - z0 + self.k - 1, slice_length(roi[1]), slice_length(roi[2]))
        image = read_padded(self.case.image, origin, size, IMAGE_PAD)
        pixels = torch.as_tensor(image, dtype=torch.float32, device=self.model.device)
        guides = upsample_box(self.guidance, shape, origin, size, self.outside)
        x = torch.cat((pixels[None], guides))[None]
        return flip_averaged(self.net2, x, self.flip_tta)[0]


class Net1Upsampled(SlabPredictor):
    """Net1's coarse probabilities upsampled trilinearly, slab by slab (no Net2)."""

    def __init__(self, probabilities: Tensor, meta: CaseMeta) -> None:
        super().__init__(whole_volume(meta.shape))
        self.probabilities, self.shape = probabilities, meta.shape

    def depth(self, budget_mib: float) -> int:
        classes = self.probabilities.shape[0]
        return per_slice_depth((self.shape[1], self.shape[2]), classes, budget_mib)

    def step(self, z0: int, z1: int) -> Tensor:
        size = (z1 - z0, self.shape[1], self.shape[2])
        fill = background(self.probabilities.shape[0])
        return upsample_box(self.probabilities, self.shape, (z0, 0, 0), size, fill)


def _coarse_grids(
    case_ids: list[str], size: tuple[int, ...], context: TrainingContext
) -> list[tuple[Tensor, tuple[int, int, int]]]:
    """Samples of a batch grouped by the grid that puts their case at the cache's
    coarse spacing: Net1 sees every case at that spacing, as in step 1 and inference."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for position, case_id in enumerate(case_ids):
        spacing = context.metas[case_id].spacing
        grid = grid_shape(size, spacing, context.preprocessing.coarse_target_mm)
        groups.setdefault(grid, []).append(position)
    return [(torch.tensor(index, device=context.device), g) for g, index in groups.items()]


def _weights_hash(network: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in network.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
