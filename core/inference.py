"""Full-resolution inference: Net1 on the coarse volume, the dynamic tile, Net2 streamed.

Net2 runs down z in slabs: a slab of D output slices reads D + K - 1 input slices of
the region of interest, and Net2's z-equivariance makes that one pass exact. Each
slab's labels go to the output before the next slab is read, so memory depends on
the in-plane ROI size and D, never on the number of slices. D comes from the FLOP and
memory accounting of Net2 for the ROI's in-plane size and the memory budget.

The baseline (``unet3d``) predicts at 2 mm and its class probabilities are resampled
back with 2nd-order B-splines, slab by slab, then argmaxed; the probabilities written
are the resampled values clipped to [0, 1] and renormalised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

from .accounting import network_cost
from .cache import CacheCase, CaseMeta, ChunkedArray
from .checkpoint import load_checkpoint
from .errors import DuosegError
from .evaluation import net1_probabilities
from .guidance import Guidance, guidance_of, guide, outside_guidance, upsample_box
from .importer import ImportedCase
from .network import SegmentationNetwork
from .preprocessing import Preprocessing, grid_shape, prepare_case
from .registry import Registry
from .resample import BSplineUpsampler, as_probabilities
from .sampler import IMAGE_PAD, read_padded

log = logging.getLogger("duoseg.inference")
CHECKPOINTS = ("best.safetensors", "last.safetensors")
MIN_COARSE = 4  # voxels per axis below which Net1 sees no anatomy to localise


class PredictError(DuosegError, ValueError):
    """Bad input to ``duoseg predict`` or ``evaluate``."""


@dataclass
class Model:
    """Trained networks and how their training data were prepared."""

    networks: dict[str, SegmentationNetwork]
    preprocessing: Preprocessing
    device: torch.device

    @property
    def two_stage(self) -> bool:
        return "net1" in self.networks and "net2" in self.networks

    @property
    def k(self) -> int:
        return int(getattr(self.networks["net2"], "k"))  # noqa: B009 - a plugin's Net2

    @property
    def classes(self) -> int:
        return self.preprocessing.classes

    @property
    def guidance(self) -> Guidance:
        net2 = self.networks["net2"]
        return guidance_of(net2.in_channels, net2.out_channels)

    @property
    def outside(self) -> list[float]:
        """Net2's guidance channels outside the volume: certainly background."""
        return outside_guidance(self.guidance, self.classes)


def load_model(run_dir: Path, registry: Registry, device: str = "cpu") -> Model:
    """The networks of ``run_dir``'s best (else last) checkpoint, in eval mode."""
    path = next((run_dir / n for n in CHECKPOINTS if (run_dir / n).is_file()), None)
    if path is None:
        raise PredictError(
            f"{run_dir}: no complete checkpoint ({' or '.join(CHECKPOINTS)}); train first"
        )
    checkpoint = load_checkpoint(path, registry)
    if not checkpoint.data:
        raise PredictError(f"{path}: checkpoint records no data preparation; retrain it")
    preprocessing = Preprocessing.from_dict(checkpoint.data, where=str(path))
    target = torch.device(device)
    networks = {}
    for role, ref in checkpoint.config["networks"].items():
        network = registry.build("network", ref["component"], **ref["params"])
        network.load_state_dict(checkpoint.network_state(role))
        networks[role] = network.to(target).eval()
    model = Model(networks, preprocessing, target)
    if not model.two_stage and "unet3d" not in networks:
        raise PredictError(f"{path}: networks {sorted(networks)} are neither net1+net2 nor unet3d")
    return model


class MemoryArray(ChunkedArray):
    """A numpy array behind the :class:`ChunkedArray` interface."""

    def __init__(self, array: NDArray[Any], where: str) -> None:
        super().__init__(array.shape, array.dtype, array.shape, where)
        self.array = array

    def _read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return np.asarray(self.array[region])


def case_from_image(image: ImportedCase, model: Model) -> CacheCase:
    """A case to predict from an imported (canonical) image, prepared by the one builder
    with the model's preprocessing record, exactly as its training cache was."""
    arrays = prepare_case(image, model.preprocessing, checksums={}, chunks=image.image.shape)
    meta = arrays.meta
    if min(meta.coarse_shape) < MIN_COARSE:
        raise PredictError(
            f"{meta.case_id}: spacing {tuple(round(s, 3) for s in meta.spacing)} mm x shape "
            f"{meta.shape} gives a coarse volume {meta.coarse_shape} at "
            f"{meta.coarse_target} mm; Net1 needs at least {MIN_COARSE} voxels per axis"
        )
    where = f"input {meta.case_id}"
    return CacheCase(
        meta,
        MemoryArray(arrays.image, where),
        None,
        MemoryArray(arrays.coarse_image, where),
        None,
        arrays.class_counts,
    )


@dataclass(frozen=True)
class Options:
    """Inference settings (``[predict]`` in the config, flags on the command line)."""

    threshold: float = 0.5  # foreground probability that makes Net1's ROI
    margin_mm: float = 10.0  # added around the ROI on every side
    largest_component: bool = False  # ROI from Net1's largest foreground component only
    memory_budget_mib: float = 1024.0  # Net2 slab sizing
    flip_tta: bool = False  # average Net2 scores with the in-plane flipped input
    lcc_per_class: bool = False  # keep each class's largest connected component
    probabilities: bool = False
    precision: str = "fp32"  # "bf16": autocast on CUDA (CPU always runs fp32)
    net1_only: bool = False  # Net1's upsampled labels (the paper's "Net1" rows), no Net2


@dataclass
class Report:
    case_id: str
    roi: tuple[tuple[int, int], ...]
    slab: int
    empty_foreground: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def whole_volume(shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))


def dynamic_tile(
    foreground: NDArray[np.floating], meta: CaseMeta, options: Options
) -> tuple[tuple[slice, slice, slice], bool]:
    """The full-resolution box around Net1's foreground (plus the margin), and whether
    the foreground was empty - then the whole volume is used, with a warning."""
    mask = foreground > options.threshold
    if options.largest_component and mask.any():
        components, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            mask = components == int(np.argmax(sizes)) + 1
    if not mask.any():
        log.warning(
            "%s: Net1 found no foreground above %.2f; predicting the whole volume",
            meta.case_id,
            options.threshold,
        )
        return whole_volume(meta.shape), True
    box = []
    for axis, (n, c, s) in enumerate(zip(meta.shape, meta.coarse_shape, meta.spacing, strict=True)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = math.ceil(options.margin_mm / s)
        low = math.floor(hits[0] * n / c) - margin
        high = math.ceil((hits[-1] + 1) * n / c) + margin
        box.append(slice(max(low, 0), min(high, n)))
    return (box[0], box[1], box[2]), False


def slab_depth(
    net2: SegmentationNetwork, in_plane: tuple[int, int], budget_mib: float, k: int, classes: int
) -> int:
    """Output slices per slab that fit the budget, from Net2's activation accounting.

    Peak memory is affine in the slab depth D (activations, input, foreground grid,
    scores): measured on the meta device at two depths, then solved for D."""

    def cost(depth: int) -> float:
        peak = network_cost(
            net2, (1, net2.in_channels, depth + k - 1, *in_plane)
        ).peak_activation_bytes
        voxels = in_plane[0] * in_plane[1]
        buffers = voxels * ((depth + k - 1) * (net2.in_channels + 3) + depth * (classes + 1)) * 4
        return float(peak + buffers)

    per_slice = (cost(16) - cost(8)) / 8
    fixed = cost(8) - 8 * per_slice
    depth = int((budget_mib * 2**20 - fixed) // per_slice)
    return max(1, min(depth, 512))


def flip_averaged(net2: SegmentationNetwork, x: Tensor, tta: bool) -> Tensor:
    """Net2's class probabilities, averaged with those of the x- and y-flipped input."""
    scores: Tensor = net2(x).float().softmax(1)
    if not tta:
        return scores
    for dims in ((-1,), (-2,)):
        flipped: Tensor = net2(x.flip(dims))
        scores += flipped.float().softmax(1).flip(dims)
    return scores / 3


class LabelSink:
    """Where predicted slabs go; implemented by the Zarr and NIfTI outputs."""

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        """Prepare the case; return how many leading slices are already written (resume)."""
        raise NotImplementedError

    def write(
        self, z: int, labels: NDArray[np.uint8], probabilities: NDArray[np.float16] | None
    ) -> None:
        raise NotImplementedError

    def end(self, meta: CaseMeta, lcc_box: tuple[slice, ...] | None) -> None:
        raise NotImplementedError


@torch.no_grad()
def predict_case(
    model: Model,
    case: CacheCase,
    sink: LabelSink,
    options: Options,
    *,
    progress: Callable[[int], None] | None = None,
    roi: tuple[slice, slice, slice] | None = None,
) -> Report:
    """Predict one case into ``sink``, slab by slab. ``roi`` replaces Net1's dynamic
    tile (Net1 still runs: its output is Net2's second channel)."""
    if options.precision not in ("fp32", "bf16"):
        raise PredictError(f"precision must be 'fp32' or 'bf16', got {options.precision!r}")
    enabled = options.precision == "bf16" and model.device.type == "cuda"
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=enabled):
        return _predict_case(model, case, sink, options, progress=progress, given_roi=roi)


def _predict_case(
    model: Model,
    case: CacheCase,
    sink: LabelSink,
    options: Options,
    *,
    progress: Callable[[int], None] | None,
    given_roi: tuple[slice, slice, slice] | None,
) -> Report:
    import time

    timings: dict[str, float] = {}
    start = time.perf_counter()
    meta = case.meta
    if model.two_stage:
        probabilities = net1_probabilities(
            model.networks["net1"], case.coarse_image[...], str(model.device)
        )
        foreground = 1 - probabilities[0]
        roi, empty = dynamic_tile(foreground.cpu().numpy(), meta, options)
        guidance = guide(probabilities, model.guidance)
        if given_roi is not None:
            roi, empty = given_roi, False
        timings["net1"] = time.perf_counter() - start
        in_plane = (roi[1].stop - roi[1].start, roi[2].stop - roi[2].start)
        if options.net1_only:
            roi = whole_volume(meta.shape)
            depth = _per_slice_depth(meta.shape, model.classes, options.memory_budget_mib)
            step = _net1_slab(probabilities, meta.shape, options.probabilities)
        else:
            depth = slab_depth(
                model.networks["net2"], in_plane, options.memory_budget_mib, model.k, model.classes
            )
            step = _two_stage_slab(model, case, guidance, roi, options)
    else:
        if options.net1_only:
            raise PredictError(f"{case.case_id}: net1_only needs a two-stage model (net1 + net2)")
        roi, empty = whole_volume(meta.shape), False
        depth = _per_slice_depth(meta.shape, model.classes, options.memory_budget_mib)
        step = _baseline_slab(model, case, options.probabilities)
        timings["baseline_2mm"] = time.perf_counter() - start
    done = sink.begin(meta, options.probabilities)
    report = Report(meta.case_id, tuple((s.start, s.stop) for s in roi), depth, empty)
    stream = time.perf_counter()
    for z0 in range(done, meta.shape[0], depth):
        z1 = min(z0 + depth, meta.shape[0])
        labels, scores = step(z0, z1)
        sink.write(z0, labels, scores)
        if progress is not None:
            progress(z1 - z0)
    timings["stream"] = time.perf_counter() - stream
    sink.end(meta, roi if options.lcc_per_class else None)
    timings["total"] = time.perf_counter() - start
    report.seconds = timings
    return report


def _two_stage_slab(
    model: Model,
    case: CacheCase,
    guidance: Tensor,
    roi: tuple[slice, slice, slice],
    options: Options,
) -> Callable[[int, int], tuple[Any, Any]]:
    meta, k, half = case.meta, model.k, model.k // 2
    net2 = model.networks["net2"]
    corner = (roi[1].start, roi[2].start)

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        labels = np.zeros((z1 - z0, *meta.shape[1:]), np.uint8)
        scores = None
        if options.probabilities:  # outside the ROI: certainly background
            scores = np.zeros((model.classes, z1 - z0, *meta.shape[1:]), np.float16)
            scores[0] = 1
        lo, hi = max(z0, roi[0].start), min(z1, roi[0].stop)
        if hi > lo:
            size = (hi - lo + k - 1, roi[1].stop - roi[1].start, roi[2].stop - roi[2].start)
            image = read_padded(case.image, (lo - half, *corner), size, IMAGE_PAD)
            pixels = torch.as_tensor(image, dtype=torch.float32, device=model.device)
            guides = upsample_box(guidance, meta.shape, (lo - half, *corner), size, model.outside)
            x = torch.cat((pixels[None], guides))[None]
            probabilities = flip_averaged(net2, x, options.flip_tta)[0]
            box = (slice(lo - z0, hi - z0), roi[1], roi[2])
            labels[box] = probabilities.argmax(0).to(torch.uint8).cpu().numpy()
            if scores is not None:
                scores[(slice(None), *box)] = probabilities.half().cpu().numpy()
        return labels, scores

    return step


def _per_slice_depth(shape: tuple[int, ...], classes: int, budget_mib: float) -> int:
    """Slices per slab when each full-resolution slice holds ``classes`` float
    probability planes and their working copies (16 bytes per voxel and class)."""
    return max(1, int(budget_mib * 2**20 // (shape[1] * shape[2] * classes * 16)))


def _net1_slab(
    probabilities: Tensor, shape: tuple[int, ...], keep_probabilities: bool
) -> Callable[[int, int], tuple[Any, Any]]:
    """Net1's coarse probabilities upsampled trilinearly, slab by slab, and labelled."""
    background = outside_guidance("probabilities", probabilities.shape[0])

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        slab = upsample_box(probabilities, shape, (z0, 0, 0), (z1 - z0, *shape[1:]), background)
        labels = slab.argmax(0).to(torch.uint8).cpu().numpy()
        return labels, slab.half().cpu().numpy() if keep_probabilities else None

    return step


def _baseline_slab(
    model: Model, case: CacheCase, keep_probabilities: bool
) -> Callable[[int, int], tuple[Any, Any]]:
    """unet3d at the baseline spacing; probabilities back with order-2 B-splines per slab."""
    meta = case.meta
    target = model.preprocessing.baseline_spacing
    if target is None:
        raise PredictError(f"{meta.case_id}: the model's preprocessing records no baseline_spacing")
    small = grid_shape(meta.shape, meta.spacing, target)
    image = torch.as_tensor(case.image[...].astype(np.float32), device=model.device)[None, None]
    smaller = F.adaptive_avg_pool3d(image, small)
    scores = model.networks["unet3d"](smaller).float().softmax(1)[0]
    del image
    upsampler = BSplineUpsampler(scores.cpu().numpy(), meta.shape)

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        values = upsampler.slab(z0, z1)  # overshoots [0, 1]: see as_probabilities
        kept = as_probabilities(values).half().numpy() if keep_probabilities else None
        return values.argmax(0).to(torch.uint8).numpy(), kept

    return step
