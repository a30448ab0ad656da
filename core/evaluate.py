"""``duoseg evaluate``: the paper's table (Dice, Jaccard, ASD, HD95 per structure and the
whole heart) for one case or a folder (mean ± sd), as text, JSON and CSV, plus PNG
overlays of ground truth against prediction on axial, coronal and sagittal slices."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from .inference import PredictError
from .metric import Metric
from .registry import Registry

# The paper's column order; values are MM-WHS label values.
STRUCTURES = {"LV": 500, "Myo": 205, "RV": 600, "LA": 420, "RA": 550, "AA": 820, "PA": 850}
METRICS = ("dice", "jaccard", "asd", "hd95")


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


def _load(path: Path) -> tuple[NDArray[np.int32], Any]:
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj).astype(np.int32)
    except Exception as exc:
        raise PredictError(f"{path}: not a readable NIfTI label file: {exc}") from exc
    return data, image


def evaluate_case(
    prediction: Path, truth: Path, registry: Registry, structures: dict[str, int] = STRUCTURES
) -> dict[str, dict[str, float]]:
    """Per structure (and ``WH``, their union): every metric."""
    predicted, p_image = _load(prediction)
    target, t_image = _load(truth)
    if predicted.shape != target.shape or not np.allclose(
        p_image.affine, t_image.affine, atol=1e-3
    ):
        raise PredictError(
            f"{prediction} vs {truth}: grids differ: shape {predicted.shape} vs {target.shape}, "
            f"affine {_rounded(p_image.affine)} vs {_rounded(t_image.affine)}"
        )
    spacing = tuple(float(z) for z in t_image.header.get_zooms()[:3])
    metrics: dict[str, Metric] = {name: registry.build("metric", name) for name in METRICS}
    masks = {name: (predicted == value, target == value) for name, value in structures.items()}
    values = list(structures.values())
    masks["WH"] = (np.isin(predicted, values), np.isin(target, values))
    return {
        structure: {m: metrics[m](p, t, spacing) for m in METRICS}
        for structure, (p, t) in masks.items()
    }


def _rounded(affine: Any) -> list[list[float]]:
    return np.round(np.asarray(affine), 3).tolist()  # type: ignore[no-any-return]


def evaluate(prediction: Path, truth: Path, registry: Registry) -> dict[str, Any]:
    """Every case that both hold; a table of mean and sd per metric and structure."""
    predicted, truths = _label_files(prediction), _label_files(truth)
    if prediction.is_file() and truth.is_file():
        pairs = [(next(iter(predicted.values())), next(iter(truths.values())), _case(truth))]
    else:
        common = sorted(set(predicted) & set(truths))
        if not common:
            raise PredictError(f"{prediction} and {truth} share no case names")
        pairs = [(predicted[c], truths[c], c) for c in common]
    cases = {case: evaluate_case(p, t, registry) for p, t, case in pairs}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for metric in METRICS:
        table[metric] = {}
        for structure in [*STRUCTURES, "WH"]:
            values = [cases[c][structure][metric] for c in cases]
            known = [v for v in values if not math.isnan(v)]
            # A surface distance to a missed structure is infinite; so is its mean.
            finite = [v for v in known if math.isfinite(v)]
            table[metric][structure] = {
                "mean": float(np.mean(known)) if known else float("nan"),
                "sd": float(np.std(finite)) if len(finite) > 1 and finite == known else 0.0,
            }
    return {"cases": cases, "table": table}


def format_table(result: dict[str, Any]) -> str:
    names = {"dice": "Dice", "jaccard": "Jaccard", "asd": "ASD (mm)", "hd95": "HD95 (mm)"}
    columns = [*STRUCTURES, "WH"]
    several = len(result["cases"]) > 1
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for metric in METRICS:
        cells = []
        for structure in columns:
            cell = result["table"][metric][structure]
            text = f"{cell['mean']:.4f}" if metric in ("dice", "jaccard") else f"{cell['mean']:.2f}"
            cells.append(text + (f" ± {cell['sd']:.2f}" if several else ""))
        lines.append(f"| {names[metric]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(result: dict[str, Any], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "structure", *METRICS])
        for case, rows in result["cases"].items():
            for structure, values in rows.items():
                writer.writerow([case, structure, *(values[m] for m in METRICS)])


def overlays(
    truth: Path,
    predictions: Mapping[str, Path],
    path: Path,
    image: Path | None = None,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
) -> Path:
    """One PNG at ``path``: the ground truth and each named prediction (columns) on
    ``planes`` (rows) through the centre of the heart, over the image if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Shown in RAS+ (anterior up in axial slices) whatever the files' orientation.
    target, t_image = _load(truth)
    columns = {"ground truth": _ras(target, t_image)}
    columns |= {name: _ras(*_load(p)) for name, p in predictions.items()}
    background = None
    if image is not None:
        loaded = nib.load(image)
        background = _ras(np.asarray(loaded.dataobj, dtype=np.float32), loaded)
    target = columns["ground truth"]
    centre = (
        np.argwhere(target > 0).mean(0).astype(int) if target.any() else np.array(target.shape) // 2
    )
    zooms = nib.as_closest_canonical(t_image).header.get_zooms()[:3]
    lookup = np.zeros(int(max(int(c.max()) for c in columns.values()) + 1))
    for index, value in enumerate(sorted(STRUCTURES.values()), 1):
        if value < lookup.size:
            lookup[value] = index
    axes_of = {"axial": 2, "coronal": 1, "sagittal": 0}  # (i, j, k) axis held fixed
    figure, axes = plt.subplots(
        len(planes), len(columns), figsize=(3.2 * len(columns), 3.4 * len(planes)), squeeze=False
    )
    for row, plane in enumerate(planes):
        axis = axes_of[plane]
        take: list[slice | int] = [slice(None)] * 3
        take[axis] = int(centre[axis])
        others = [a for a in range(3) if a != axis]
        aspect = zooms[others[1]] / zooms[others[0]]
        for column, (name, labels) in enumerate(columns.items()):
            ax = axes[row, column]
            if background is not None:
                ax.imshow(background[tuple(take)].T, cmap="gray", origin="lower", aspect=1 / aspect)
            shown = np.ma.masked_equal(lookup[labels[tuple(take)]], 0)
            ax.imshow(shown.T, cmap="tab10", vmin=0, vmax=9, alpha=0.6, origin="lower",
                      aspect=1 / aspect, interpolation="nearest")  # fmt: skip
            ax.set_title(f"{name} ({plane})")
            ax.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=70)
    plt.close(figure)
    return path


def _ras(data: NDArray[Any], image: Any) -> NDArray[Any]:
    transform = nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt("RAS")
    )
    return np.asarray(nib.orientations.apply_orientation(data, transform))


def save_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=1, default=lambda v: None))
