"""Full-resolution inference: Net1 on the coarse volume, the dynamic tile, Net2 streamed.

Net2 runs down z in slabs: a slab of D output slices reads D + K - 1 input slices of
the region of interest, and Net2's z-equivariance makes that one pass exact. Each
slab's labels go to the output before the next slab is read, so memory depends on
the in-plane ROI size and D, never on the number of slices. D comes from the FLOP and
memory accounting of Net2 for the ROI's in-plane size and the memory budget.

The baseline (``unet3d``) predicts at 2 mm and its class probabilities are resampled
back with 2nd-order B-splines, slab by slab, then argmaxed.
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
from .cache_build import coarse_shape, downsample_image, normalise
from .checkpoint import load_checkpoint
from .errors import DuosegError
from .evaluation import net1_probabilities
from .guidance import Guidance, guidance_of, guide
from .network import SegmentationNetwork
from .registry import Registry
from .resample import BSplineUpsampler
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
    data: dict[str, Any]
    device: torch.device

    @property
    def two_stage(self) -> bool:
        return "net1" in self.networks and "net2" in self.networks

    @property
    def k(self) -> int:
        return int(getattr(self.networks["net2"], "k"))  # noqa: B009 - a plugin's Net2

    @property
    def classes(self) -> int:
        return len(self.data["class_names"])

    @property
    def guidance(self) -> Guidance:
        net2 = self.networks["net2"]
        return guidance_of(net2.in_channels, net2.out_channels)


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
    target = torch.device(device)
    networks = {}
    for role, ref in checkpoint.config["networks"].items():
        network = registry.build("network", ref["component"], **ref["params"])
        network.load_state_dict(checkpoint.network_state(role))
        networks[role] = network.to(target).eval()
    model = Model(networks, checkpoint.data, target)
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


def case_from_image(case_id: str, image: Any, model: Model) -> CacheCase:
    """A case to predict from an imported (canonical) image, prepared as in training."""
    low, high = model.data["percentiles"]
    normalised, parameters = normalise(image.image, (low, high))
    spacing = np.asarray(image.spacing)
    # As the cache build did, so Net1 sees new images on the grid it was trained on.
    target = float(model.data["coarse_spacing"])
    small = coarse_shape(normalised.shape, image.spacing, target)
    if min(small) < MIN_COARSE:
        raise PredictError(
            f"{case_id}: spacing {tuple(np.round(spacing, 3))} mm x shape {normalised.shape} "
            f"gives a coarse volume {small} at {target} mm; Net1 needs at least "
            f"{MIN_COARSE} voxels per axis"
        )
    coarse = downsample_image(normalised, (small[0], small[1], small[2]))
    extent = spacing * np.asarray(normalised.shape)
    meta = CaseMeta(
        case_id=case_id,
        shape=normalised.shape,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        coarse_shape=small,
        coarse_spacing=tuple(float(v) for v in extent / np.asarray(small)),  # type: ignore[arg-type]
        canonical_affine=image.canonical_affine.tolist(),
        source_affine=image.source_affine.tolist(),
        source_shape=image.source_shape,
        class_names=tuple(model.data["class_names"]),
        label_values=tuple(model.data["label_values"]),
        normalisation=parameters,
        checksums={},
        has_label=False,
        coarse_target=target,
    )
    where = f"input {case_id}"
    return CacheCase(
        meta,
        MemoryArray(normalised, where),
        None,
        MemoryArray(coarse, where),
        None,
        np.zeros((0, 0, 0, model.classes), np.int64),
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


def guidance_slab(
    guidance: Tensor, shape: tuple[int, ...], z: tuple[int, int], y: slice, x: slice
) -> Tensor:
    """Trilinear upsampling of Net1's coarse guidance channels (c, z, y, x) at
    full-resolution voxels ``z[0]..z[1]`` (may reach past the volume: zero there)
    x ``y`` x ``x``.

    Equals ``F.interpolate(..., size=shape, mode="trilinear", align_corners=False)``
    restricted to the box, without ever building the full-resolution volume."""
    device = guidance.device
    z0, z1 = max(z[0], 0), min(z[1], shape[0])
    out = torch.zeros(
        (guidance.shape[0], z[1] - z[0], y.stop - y.start, x.stop - x.start), device=device
    )
    if z1 <= z0:
        return out
    axes = [
        (torch.arange(lo, hi, device=device, dtype=torch.float32) * 2 + 1) / n - 1
        for lo, hi, n in (
            (z0, z1, shape[0]),
            (y.start, y.stop, shape[1]),
            (x.start, x.stop, shape[2]),
        )
    ]
    gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack((gx, gy, gz), -1)[None]
    sampled = F.grid_sample(
        guidance[None].float(),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0]
    out[:, z0 - z[0] : z1 - z[0]] = sampled
    return out


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

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        labels = np.zeros((z1 - z0, *meta.shape[1:]), np.uint8)
        scores = None
        if options.probabilities:  # outside the ROI: certainly background
            scores = np.zeros((model.classes, z1 - z0, *meta.shape[1:]), np.float16)
            scores[0] = 1
        lo, hi = max(z0, roi[0].start), min(z1, roi[0].stop)
        if hi > lo:
            size = (hi - lo + k - 1, roi[1].stop - roi[1].start, roi[2].stop - roi[2].start)
            image = read_padded(
                case.image, (lo - half, roi[1].start, roi[2].start), size, IMAGE_PAD
            )
            pixels = torch.as_tensor(image, dtype=torch.float32, device=model.device)
            guides = guidance_slab(guidance, meta.shape, (lo - half, hi + half), roi[1], roi[2])
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
    y, x = slice(0, shape[1]), slice(0, shape[2])

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        slab = guidance_slab(probabilities, shape, (z0, z1), y, x)
        labels = slab.argmax(0).to(torch.uint8).cpu().numpy()
        return labels, slab.half().cpu().numpy() if keep_probabilities else None

    return step


def _baseline_slab(
    model: Model, case: CacheCase, keep_probabilities: bool
) -> Callable[[int, int], tuple[Any, Any]]:
    """unet3d at the baseline spacing; probabilities back with order-2 B-splines per slab."""
    meta = case.meta
    target = float(model.data.get("baseline_spacing", 2.0))
    small = tuple(
        max(1, round(n * s / target)) for n, s in zip(meta.shape, meta.spacing, strict=True)
    )
    image = torch.as_tensor(case.image[...].astype(np.float32), device=model.device)[None, None]
    smaller = F.adaptive_avg_pool3d(image, (small[0], small[1], small[2]))
    scores = model.networks["unet3d"](smaller).float().softmax(1)[0]
    del image
    upsampler = BSplineUpsampler(scores.cpu().numpy(), meta.shape)

    def step(z0: int, z1: int) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
        probabilities = upsampler.slab(z0, z1)
        kept = probabilities.half().numpy() if keep_probabilities else None
        return probabilities.argmax(0).to(torch.uint8).numpy(), kept

    return step
