"""``duoseg evaluate``: the paper's table (Dice, Jaccard, ASD, HD95 per class and the
whole foreground) for one case or a folder (mean ± sd), as text, JSON and CSV, plus PNG
overlays of ground truth against prediction on axial, coronal and sagittal slices.

The classes - names and label values - are never a fixed table: they come from a
``--labels`` map, a run's checkpoint, the prediction's own record (the completion
record of its folder, or the NIfTI extension duoseg writes into every label file), or,
failing all of those, the nonzero values found in the ground truth, named by value."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
from duoseg.core.errors import PredictError
from duoseg.core.inference.ceiling import round_trip
from duoseg.core.inference.outputs import recorded_labels
from duoseg.core.inference.package import open_model
from duoseg.core.interfaces.importer import integer_labels
from duoseg.core.interfaces.metric import Metric
from duoseg.core.interfaces.store import COMPLETION_FILE
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.core.training.checkpoint import BEST, LAST, load_checkpoint, model_checkpoint
from numpy.typing import NDArray

METRICS = ("dice", "jaccard", "asd", "hd95")
T = TypeVar("T")
WHOLE = "WH"  # the whole foreground: the union of every listed class
FROM_TRUTH = "the nonzero values found in"  # how a label source found in GT begins


def _label_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {_case(path): path}
    if not path.is_dir():
        raise PredictError(f"{path}: not found")
    files = {_case(p): p for p in sorted(path.glob("*_label.nii*"))}
    if not files:
        raise PredictError(f"{path}: no *_label.nii[.gz] files")
    return files


def _case(path: Path) -> str:
    name = path.name
    for suffix in ("_label.nii.gz", "_label.nii", ".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_labels(path: Path) -> tuple[NDArray[np.int32], Any]:
    """A label file's values (int32, the file's voxel order) and its nibabel image."""
    try:
        image = nib.load(path)
        raw = np.asarray(image.dataobj)
    except Exception as exc:
        raise PredictError(f"{path}: not a readable NIfTI label file: {exc}") from exc
    return integer_labels(raw, path).astype(np.int32), image


def check_labels(labels: Any, where: str) -> dict[str, int]:
    """``labels`` as ``{class name: label value}`` in class order, or an error naming
    ``where`` (file and field, or the option), the class and the offending value."""
    if not isinstance(labels, Mapping) or not labels:
        raise PredictError(f"{where}: expected a non-empty map {{class name: label value}}, "
                           f"got {labels!r}")  # fmt: skip
    checked: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(name, str) or not name.strip():
            raise PredictError(f"{where}: class name {name!r} is not a non-empty name")
        if name == WHOLE:
            raise PredictError(
                f"{where}: class name {name!r} is reserved for the whole foreground "
                "(the union of the classes)"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PredictError(
                f"{where}: class {name!r} has label value {value!r}; label values are "
                "positive integers (0 is the background)"
            )
        if value in owner:
            raise PredictError(
                f"{where}: classes {owner[value]!r} and {name!r} share label value {value}"
            )
        owner[value] = name
        checked[name] = value
    return checked


def run_labels(run: Path, registry: Registry) -> dict[str, int]:
    """The classes 1..C a model (a run folder's model checkpoint, or a package) was
    trained on."""
    if not run.is_dir():
        checkpoint = open_model(run, registry)  # a package (or a refusal naming it)
    elif (path := model_checkpoint(run)) is not None:  # chosen once: its warning once
        checkpoint = load_checkpoint(path, registry)
    else:
        raise PredictError(
            f"{run}: --run has no complete checkpoint ({BEST} or {LAST}) to take "
            "the class names and label values from"
        )
    where = f"{checkpoint.path}: field data"
    record = Preprocessing.from_dict(checkpoint.data, where=where)
    return check_labels(record.label_map(), where)


def resolve_labels(
    prediction: Path,
    registry: Registry,
    *,
    labels: Mapping[str, int] | None = None,
    run: Path | None = None,
) -> tuple[dict[str, int], str] | None:
    """The classes to evaluate and where they came from: ``labels`` (``--labels``), else
    ``run``'s checkpoint, else the prediction's record; None if there is none of these."""
    if labels is not None:
        return check_labels(labels, "--labels"), "--labels"
    if run is not None:
        return run_labels(run, registry), f"run {run}"
    files = [prediction] if prediction.is_file() else sorted(prediction.glob("*_label.nii*"))[:1]
    folder = prediction if prediction.is_dir() else prediction.parent
    for record in (folder / COMPLETION_FILE, *files):
        found = recorded_labels(record)
        if found is not None:
            return check_labels(found, f"{record}: field labels"), str(record)
    return None


def _truth_labels(truths: Sequence[Path], where: Path) -> tuple[dict[str, int], str]:
    """Every nonzero value found in the ground truth, named by its value."""
    values: set[int] = set()
    for path in truths:
        values.update(int(v) for v in np.unique(read_labels(path)[0]))
    values.discard(0)
    if not values:
        raise PredictError(
            f"{where}: the ground truth holds only label value 0 and no label map was given "
            "(--labels NAME=V,... or --run RUN_DIR)"
        )
    found = {str(v): v for v in sorted(values)}
    return found, f"{FROM_TRUTH} {where}, named by value (no --labels, --run or record in PRED)"


def _pairs(prediction: Path, truth: Path) -> list[tuple[Path, Path, str]]:
    predicted, truths = _label_files(prediction), _label_files(truth)
    if prediction.is_file() and truth.is_file():
        return [(next(iter(predicted.values())), next(iter(truths.values())), _case(truth))]
    common = sorted(set(predicted) & set(truths))
    if not common:
        raise PredictError(f"{prediction} and {truth} share no case names")
    return [(predicted[c], truths[c], c) for c in common]


def _check_grids(prediction: Path, truth: Path) -> None:
    """From the headers alone: both files hold the same voxel grid."""
    p_image, t_image = _header(prediction), _header(truth)
    p_shape, t_shape = tuple(p_image.shape), tuple(t_image.shape)
    if p_shape != t_shape or not np.allclose(p_image.affine, t_image.affine, atol=1e-3):
        raise PredictError(
            f"{prediction} vs {truth}: grids differ: shape {p_shape} vs {t_shape}, "
            f"affine {_rounded(p_image.affine)} vs {_rounded(t_image.affine)}"
        )


def _header(path: Path) -> Any:
    try:
        return nib.load(path)  # the voxels are read only when asked for
    except Exception as exc:
        raise PredictError(f"{path}: not a readable NIfTI label file: {exc}") from exc


def _load_pair(prediction: Path, truth: Path) -> tuple[NDArray[np.int32], NDArray[np.int32], Any]:
    _check_grids(prediction, truth)
    predicted, _ = read_labels(prediction)
    target, t_image = read_labels(truth)
    return predicted, target, t_image


def _built_metrics(registry: Registry) -> dict[str, Metric]:
    return {name: registry.build("metric", name) for name in METRICS}


def _metrics(
    predicted: NDArray[np.int32],
    target: NDArray[np.int32],
    spacing: tuple[float, ...],
    metrics: Mapping[str, Metric],
    labels: Mapping[str, int],
) -> tuple[dict[str, dict[str, float]], bool]:
    """Every metric per class and ``WH``; whether any class occurs in either volume.

    Scored inside the box of both foregrounds plus one voxel: every metric is unchanged
    there, and a whole-chest volume costs what its heart does."""
    values = list(labels.values())
    whole = np.isin(predicted, values), np.isin(target, values)
    box = bounding_box(whole[0] | whole[1], margin=1)
    predicted, target = predicted[box], target[box]
    masks = {name: (predicted == value, target == value) for name, value in labels.items()}
    masks[WHOLE] = (whole[0][box], whole[1][box])
    scores = {
        structure: {m: metrics[m](p, t, spacing) for m in METRICS}
        for structure, (p, t) in masks.items()
    }
    return scores, bool(masks[WHOLE][0].any() or masks[WHOLE][1].any())


def bounding_box(foreground: NDArray[np.bool_], *, margin: int = 0) -> tuple[slice, ...]:
    """The box of ``foreground`` plus ``margin`` voxels each side (the whole volume if
    empty)."""
    found = [np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
             for axis in range(3)]  # fmt: skip
    if not found[0].size:
        return (slice(None),) * 3
    return tuple(slice(max(int(f[0]) - margin, 0), int(f[-1]) + 1 + margin) for f in found)


def _rounded(affine: Any) -> list[list[float]]:
    return np.round(np.asarray(affine), 3).tolist()  # type: ignore[no-any-return]


def evaluate(
    prediction: Path,
    truth: Path,
    registry: Registry,
    *,
    labels: Mapping[str, int] | None = None,
    run: Path | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Every case that both hold; a table of mean and sd per metric and class.

    The result's ``labels`` are the classes used (``{name: value}``, in table order) and
    ``label_source`` says where they came from (see :func:`resolve_labels`; failing those,
    the nonzero values of the ground truth). No listed class in any case is an error.
    ``workers`` processes score cases at a time (the metrics must pickle; the built-ins
    do)."""
    pairs = _pairs(prediction, truth)
    for p, t, _ in pairs:  # before reading any voxels
        _check_grids(p, t)
    resolved = resolve_labels(prediction, registry, labels=labels, run=run)
    classes, source = resolved or _truth_labels([t for _, t, _ in pairs], truth)
    score = partial(_score_pair, metrics=_built_metrics(registry), classes=classes)
    scored = _map(score, [(p, t) for p, t, _ in pairs], workers)
    cases = {case: result for (_, _, case), (result, _) in zip(pairs, scored, strict=True)}
    matched = any(present for _, present in scored)
    if not matched:
        found: set[int] = set()
        for p, t, _ in pairs:
            for path in (p, t):
                found.update(int(v) for v in np.unique(read_labels(path)[0]))
        raise PredictError(
            f"{prediction} vs {truth}: field labels: none of the label values looked for "
            f"{classes} (from {source}) occurs in any case; values found: {sorted(found)}"
        )
    return {"labels": classes, "label_source": source, "cases": cases,
            "table": _table(cases, classes)}  # fmt: skip


def _table(
    cases: Mapping[str, Mapping[str, Mapping[str, float]]], classes: Mapping[str, int]
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sd over the cases of every metric, per class and ``WH``; the sd is the
    population one (ddof 0), as numpy's default."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for metric in METRICS:
        table[metric] = {}
        for structure in [*classes, WHOLE]:
            scores = [cases[c][structure][metric] for c in cases]
            known = [v for v in scores if not math.isnan(v)]
            # A surface distance to a missed structure is infinite; so is its mean.
            finite = [v for v in known if math.isfinite(v)]
            table[metric][structure] = {
                "mean": float(np.mean(known)) if known else float("nan"),
                "sd": float(np.std(finite)) if len(finite) > 1 and finite == known else 0.0,
            }
    return table


def _ceiling_case(
    path: Path, *, spacing_mm: float, metrics: Mapping[str, Metric], classes: Mapping[str, int]
) -> dict[str, dict[str, float]]:
    """One label file to ``spacing_mm`` and back, scored against itself."""
    target, image = read_labels(path)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    values = np.array([0, *classes.values()], np.int32)
    order = np.argsort(values)
    found = np.searchsorted(values[order], target).clip(0, len(values) - 1)
    index = order[found]
    unknown = values[index] != target
    index[unknown] = 0  # values outside the classes are background to both
    back = values[round_trip(index.astype(np.uint8), spacing, spacing_mm, len(values))]
    return _metrics(back, np.where(unknown, 0, target), spacing, metrics, classes)[0]


def _score_pair(
    pair: tuple[Path, Path], *, metrics: Mapping[str, Metric], classes: Mapping[str, int]
) -> tuple[dict[str, dict[str, float]], bool]:
    (predicted, _), (target, t_image) = read_labels(pair[0]), read_labels(pair[1])  # grids checked
    spacing = tuple(float(z) for z in t_image.header.get_zooms()[:3])
    return _metrics(predicted, target, spacing, metrics, classes)


def _map(job: Callable[[Any], T], items: Sequence[Any], workers: int) -> list[T]:
    """``job`` over ``items``, in ``workers`` processes when there are several of both."""
    if workers < 1:
        raise PredictError(f"--workers must be >= 1, got {workers}")
    if workers == 1 or len(items) < 2:
        return [job(item) for item in items]
    # Spawned, not forked: a fork of a process whose torch (OpenMP) threads are running
    # can deadlock in the child's first parallel region (the ceiling's resampling).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=context) as pool:
        return list(pool.map(job, items))


def ceiling(
    truth: Path,
    registry: Registry,
    spacing_mm: float,
    *,
    labels: Mapping[str, int] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """The ceiling of the ``spacing_mm`` path for every ground-truth case: each label map
    taken to that grid and back (:mod:`duoseg.core.inference.ceiling`) and scored against
    itself, as :func:`evaluate` scores a prediction. The classes are ``labels`` or the
    nonzero values found in the ground truth."""
    if not spacing_mm > 0 or not math.isfinite(spacing_mm):
        raise PredictError(
            f"--ceiling: the grid must be a positive spacing in mm, got {spacing_mm}"
        )
    files = _label_files(truth)
    if labels is not None:
        classes, source = check_labels(labels, "--labels"), "--labels"
    else:
        classes, source = _truth_labels(list(files.values()), truth)
    job = partial(_ceiling_case, spacing_mm=spacing_mm, metrics=_built_metrics(registry),
                  classes=classes)  # fmt: skip
    cases = dict(zip(files, _map(job, list(files.values()), workers), strict=True))
    return {"labels": classes, "label_source": source, "cases": cases,
            "table": _table(cases, classes), "ceiling_mm": spacing_mm}  # fmt: skip
