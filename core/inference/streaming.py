"""Full-resolution inference: a method's slab predictor, streamed down z.

A method (``method`` plugin) gives, for each case, the region to label, the slab
depth that fits the memory budget and ``step(z0, z1)``: the class probabilities of
those slices. This driver walks the volume in slabs of that depth, writes each slab's
labels (and optionally probabilities) to the output while it computes the next (one
writer thread, one write in flight), and labels everything outside the region
background. Memory therefore depends on the in-plane size and the slab depth, never on
the number of slices.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from duoseg.core.errors import PredictError
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.interfaces.method import Model, SlabPredictor
from duoseg.core.interfaces.store import CacheCase, ChunkedArray
from duoseg.core.interfaces.writer import LabelSink
from duoseg.core.records.case import CaseMeta
from numpy.typing import NDArray

log = logging.getLogger("duoseg.inference")


@dataclass(frozen=True)
class Options:
    """Inference settings every method shares; ``method`` holds the method's own options
    (``duoseg predict --method-option KEY=VALUE``)."""

    memory_budget_mib: float = 1024.0  # slab sizing
    lcc_per_class: bool = False  # keep each class's largest connected component
    probabilities: bool = False
    precision: str = "fp32"  # "bf16": autocast on CUDA (CPU always runs fp32)
    method: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise PredictError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not self.memory_budget_mib > 0:
            raise PredictError(f"memory budget must be > 0 MiB, got {self.memory_budget_mib}")


@dataclass
class Report:
    """One predicted case. ``roi_fraction`` is the labelled region's share of the
    volume; ``roi_recall``, where the case has a label and the region is not the whole
    volume, each structure's share of voxels inside it (below 1: the region, a
    localiser's tile, cut the structure)."""

    case_id: str
    roi: tuple[tuple[int, int], ...]  # the region the method labelled
    slab: int
    details: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    roi_fraction: float = 1.0
    roi_recall: dict[str, float] | None = None


def whole_volume(shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))


def per_slice_depth(in_plane: tuple[int, int], classes: int, budget_mib: float) -> int:
    """Slices per slab when each slice holds ``classes`` float probability planes and
    their working copies (16 bytes per voxel and class)."""
    return max(1, int(budget_mib * 2**20 // (in_plane[0] * in_plane[1] * classes * 16)))


@torch.no_grad()
def predict_case(
    model: Model,
    case: CacheCase,
    sink: LabelSink,
    options: Options,
    *,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Predict one case into ``sink``, slab by slab, through the model's method."""
    enabled = options.precision == "bf16" and model.device.type == "cuda"
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=enabled):
        return _stream(model, case, sink, options, progress)


def _stream(
    model: Model,
    case: CacheCase,
    sink: LabelSink,
    options: Options,
    progress: Callable[[int], None] | None,
) -> Report:
    start = time.perf_counter()
    meta = case.meta
    predictor = model.method.predictor(model, case, options.method)
    _check_details(predictor, model)
    region = predictor.region
    depth = predictor.depth(options.memory_budget_mib)
    prepared = time.perf_counter()
    done = sink.begin(meta, options.probabilities)
    # One writer thread: a slab is written (compressed, copied to disk) while the next
    # is computed; one write in flight at most, so memory stays at two slabs' output.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="duoseg-writer") as writer:
        pending: tuple[Future[None], int] | None = None
        for z0 in range(done, meta.shape[0], depth):
            z1 = min(z0 + depth, meta.shape[0])
            labels, scores = _slab(predictor.step, region, meta, (z0, z1), options.probabilities)
            _written(pending, progress)
            pending = (writer.submit(sink.write, z0, labels, scores), z1 - z0)
        _written(pending, progress)
    streamed = time.perf_counter()
    sink.end(meta, region if options.lcc_per_class else None)
    seconds = {"prepare": prepared - start, "stream": streamed - prepared}
    seconds["total"] = time.perf_counter() - start
    roi = tuple((s.start, s.stop) for s in region)
    fraction = float(np.prod([s.stop - s.start for s in region]) / np.prod(meta.shape))
    recall = None
    if case.label is not None and fraction < 1:
        recall = region_recall(case.label, region, meta, depth)
    return Report(meta.case_id, roi, depth, predictor.details, seconds, fraction, recall)


def region_recall(
    label: ChunkedArray, region: tuple[slice, ...], meta: CaseMeta, slab: int
) -> dict[str, float]:
    """Each structure's share of its voxels inside ``region`` (NaN where it is absent),
    counted ``slab`` slices at a time: memory stays that of a slab, as prediction's."""
    classes = len(meta.class_names)
    inside, total = np.zeros(classes, np.int64), np.zeros(classes, np.int64)
    for z0 in range(0, meta.shape[0], slab):
        block = label[z0 : z0 + slab]
        total += np.bincount(block.ravel(), minlength=classes)[:classes]
        lo, hi = max(region[0].start - z0, 0), max(min(region[0].stop - z0, len(block)), 0)
        if hi > lo:
            kept = block[lo:hi, region[1], region[2]]
            inside += np.bincount(kept.ravel(), minlength=classes)[:classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = inside / total
    return {name: float(shares[c]) for c, name in enumerate(meta.class_names) if c > 0}


def _written(
    pending: tuple[Future[None], int] | None, progress: Callable[[int], None] | None
) -> None:
    """Wait for the slab in flight (slabs are written in order; a failed write raises
    here and stops the case), then count its slices as done."""
    if pending is None:
        return
    write, slices = pending
    write.result()
    if progress is not None:
        progress(slices)


def _check_details(predictor: SlabPredictor, model: Model) -> None:
    """Details go into the output's JSON record: refuse what JSON cannot hold now, not
    after every case has been predicted."""
    try:
        json.dumps(predictor.details)
    except (TypeError, ValueError) as exc:
        raise PredictError(
            f"method {model.method}: predictor details {predictor.details!r} are not JSON: {exc}"
        ) from exc


def _slab(
    step: Callable[[int, int], torch.Tensor],
    region: tuple[slice, slice, slice],
    meta: CaseMeta,
    slab: tuple[int, int],
    keep_probabilities: bool,
) -> tuple[NDArray[np.uint8], NDArray[np.float16] | None]:
    """Labels (and probabilities) of slices ``slab``: the predictor's inside the region,
    certainly background outside it."""
    z0, z1 = slab
    labels = np.zeros((z1 - z0, *meta.shape[1:]), np.uint8)
    scores = None
    if keep_probabilities:
        scores = np.zeros((len(meta.class_names), z1 - z0, *meta.shape[1:]), np.float16)
        scores[0] = 1
    lo, hi = max(z0, region[0].start), min(z1, region[0].stop)
    if hi > lo:
        probabilities = step(lo, hi)
        box = (slice(lo - z0, hi - z0), region[1], region[2])
        labels[box] = most_probable(probabilities).cpu().numpy()
        if scores is not None:
            scores[(slice(None), *box)] = probabilities.half().cpu().numpy()
    return labels, scores


@torch.no_grad()
def most_probable(probabilities: torch.Tensor) -> torch.Tensor:
    """The argmax over classes (dim 0) as uint8, the first class winning ties.

    ``argmax(0)`` is fast only where classes are adjacent in memory (channels-last); on
    a (c, z, y, x) layout it strides through memory, 7x slower than comparing class
    planes in turn. Scores are expected finite: where a voxel has NaN scores the two
    layouts may label it differently."""
    if probabilities.stride(0) == 1:
        return probabilities.argmax(0).to(torch.uint8)
    best = probabilities[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for c in range(1, probabilities.shape[0]):
        better = probabilities[c] > best
        labels.masked_fill_(better, c)
        torch.maximum(best, probabilities[c], out=best)
    return labels


def predict_labels(model: Model, case: CacheCase, options: Options) -> NDArray[np.uint8]:
    """One case's labels in memory (validation, notebooks)."""
    sink = MemorySink()
    predict_case(model, case, sink, options)
    return sink.labels
