"""What ``duoseg evaluate``'s scores become: the table printed, CSV and JSON files, and
overlay PNGs of predictions on the ground truth."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from duoseg.core.data.ngff import palette_index
from duoseg.core.inference.evaluate import METRICS, WHOLE, read_labels
from numpy.typing import NDArray


def class_names(result: Mapping[str, Any]) -> list[str]:
    """The classes of an :func:`evaluate` result in table order, ``WH`` excluded."""
    return [s for s in result["table"]["dice"] if s != WHOLE]


def format_table(result: dict[str, Any]) -> str:
    names = {"dice": "Dice", "jaccard": "Jaccard", "asd": "ASD (mm)", "hd95": "HD95 (mm)"}
    columns = [*class_names(result), WHOLE]
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
    *,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
    labels: Mapping[str, int] | None = None,
) -> Path:
    """One PNG at ``path``: the ground truth and each named prediction (columns) on
    ``planes`` (rows) through the centre of the foreground, over the image if given.
    Colours follow ``labels``' values (default: the nonzero values of every column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Shown in RAS+ (anterior up in axial slices) whatever the files' orientation.
    target, t_image = read_labels(truth)
    columns = {"ground truth": _ras(target, t_image)}
    columns |= {name: _ras(*read_labels(p)) for name, p in predictions.items()}
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
    if labels is None:
        shown_values = sorted({int(v) for c in columns.values() for v in np.unique(c)} - {0})
    else:
        shown_values = sorted(labels.values())
    for index, value in enumerate(shown_values):
        if 0 < value < lookup.size:
            lookup[value] = palette_index(index)  # tab10's colours 1..9; 0 is masked
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
        for column, (name, values) in enumerate(columns.items()):
            ax = axes[row, column]
            if background is not None:
                ax.imshow(background[tuple(take)].T, cmap="gray", origin="lower", aspect=1 / aspect)
            shown = np.ma.masked_equal(lookup[values[tuple(take)]], 0)
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
