"""OME-Zarr (NGFF 0.5) metadata for the Zarr groups duoseg writes, so that viewers
(napari-ome-zarr, neuroglancer) and ``ome-zarr`` readers show a case at its physical size.

NGFF 0.5 keeps its metadata under ``attributes["ome"]`` of a Zarr v3 group: a
``multiscales`` image lists arrays by path, each level with its voxel size, and a
label image adds ``image-label`` (class colours and names). duoseg's arrays keep
their own paths, so the metadata points at them where they are:

- a prediction's case group is a label image: one level, ``labels``, with
  ``image-label`` (``probabilities`` has a channel axis, so it is no level of it).
  NGFF also reserves the name ``labels`` for an image's group of label images:
  ome-zarr-py (napari's reader) and neuroglancer read this layout, but a strict
  validator (ome-zarr-models) refuses an array of that name;
- a cache's case group is an image, ``image`` then its levels' images from fine to
  coarse (``baseline_image``, ``coarse_image``), and a second multiscale named
  ``label`` (``label``, ``baseline_label``, ``coarse_label``). NGFF wants a label image
  in a group of its own under ``labels/``; the cache's label arrays sit beside the
  image, so they get no ``image-label`` there.

Physical coordinates are millimetres from the centre of the first full-resolution
voxel, along the arrays' axes (z, y, x) in the cache's canonical orientation: a
prediction and its cache case overlay, but NGFF 0.5 has no rotation, so the
source's origin and direction stay in duoseg's own records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from duoseg.core.errors import DataError
from duoseg.core.fs import write_atomically
from duoseg.core.records.case import CaseMeta

VERSION: Final = "0.5"
AXES: Final = ("z", "y", "x")
# matplotlib's "tab10", the colour map of the PNG overlays (duoseg.core.inference.evaluate),
# so a class has one colour in every picture duoseg makes.
TAB10: Final = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
LABEL_ALPHA: Final = 255
# How the cache's coarse levels are made, by NGFF "type": area average, majority vote.
DOWNSCALING: Final = {
    "local_mean": "duoseg.core.data.grid.downsample_image",
    "mode": "duoseg.core.data.grid.downsample_label",
}


def palette_index(rank: int) -> int:
    """The TAB10 entry of the class whose label value is the ``rank``-th smallest
    (0-based): entries 1..9 in turn; entry 0 is left to the overlays' background."""
    return 1 + rank % 9


def class_colours(label_values: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """RGBA per class 1..C (``label_values[1:]``), ranked by label value as the overlays
    rank them; the MM-WHS classes get Myo orange, LA green, LV red, RA purple, ..."""
    values = list(label_values[1:])
    ranks = {value: rank for rank, value in enumerate(sorted(values))}
    return [(*TAB10[palette_index(ranks[v])], LABEL_ALPHA) for v in values]


def axes() -> list[dict[str, str]]:
    return [{"name": name, "type": "space", "unit": "millimeter"} for name in AXES]


def multiscale(
    name: str, levels: Sequence[tuple[str, Sequence[float]]], downscaling: str | None = None
) -> dict[str, Any]:
    """A multiscale image of ``levels`` (array path, voxel size in mm), finest first, all
    covering the same extent. A coarser level's first voxel centre lies half a coarse
    voxel minus half a fine one from the first fine voxel's: its translation."""
    base = levels[0][1]
    datasets = []
    for level, (path, spacing) in enumerate(levels):
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in spacing]}]
        if level > 0:
            shift = [(s - b) / 2 for s, b in zip(spacing, base, strict=True)]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": path, "coordinateTransformations": transforms})
    found: dict[str, Any] = {"name": name, "axes": axes(), "datasets": datasets}
    if downscaling is not None and len(levels) > 1:
        found["type"] = downscaling
        found["metadata"] = {"method": DOWNSCALING[downscaling]}
    return found


def image_label(class_names: Sequence[str], label_values: Sequence[int]) -> dict[str, Any]:
    """Colours and names of class indices 0..C; background (0) transparent. Each
    class records its value in the source data too (MM-WHS: 205 for Myo)."""
    colours = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    colours += [
        {"label-value": index, "rgba": list(rgba)}
        for index, rgba in enumerate(class_colours(label_values), start=1)
    ]
    properties = [
        {"label-value": index, "class": name, "source-value": int(value)}
        for index, (name, value) in enumerate(zip(class_names, label_values, strict=True))
    ]
    return {"colors": colours, "properties": properties}


def prediction_metadata(meta: CaseMeta) -> dict[str, Any]:
    """The ``ome`` attributes of a prediction's case group: a one-level label image."""
    return {
        "version": VERSION,
        "multiscales": [multiscale(meta.case_id, [("labels", meta.spacing)])],
        "image-label": image_label(meta.class_names, meta.label_values),
    }


def cache_metadata(meta: CaseMeta) -> dict[str, Any]:
    """The ``ome`` attributes of a cache's case group: the image at full resolution and
    on its levels and, for a labelled case, the label likewise as a second multiscale."""

    def levels(suffix: str) -> list[tuple[str, Sequence[float]]]:
        # NGFF levels go from fine to coarse on every axis: a level finer than the one
        # before on some axis (thick slices, a small phantom) is left out.
        found: list[tuple[str, Sequence[float]]] = [(suffix, meta.spacing)]
        for name, level in sorted(meta.levels.items(), key=lambda item: item[1].target_mm):
            if all(c >= s for c, s in zip(level.spacing, found[-1][1], strict=True)):
                found.append((f"{name}_{suffix}", level.spacing))
        return found

    found = [multiscale(meta.case_id, levels("image"), "local_mean")]
    if meta.has_label:
        found.append(multiscale("label", levels("label"), "mode"))
    return {"version": VERSION, "multiscales": found}


def write_group_metadata(group: Path, ome: dict[str, Any]) -> None:
    """Set ``ome`` in the attributes of the Zarr v3 group at ``group``, atomically: a
    half-written zarr.json would leave the group unreadable to the resuming run."""
    try:
        document = json.loads((group / "zarr.json").read_text())
    except (OSError, ValueError) as exc:  # the group vanished or was damaged meanwhile
        raise DataError(f"{group / 'zarr.json'}: not a readable Zarr group: {exc}") from exc
    document.setdefault("attributes", {})["ome"] = ome
    text = json.dumps(document, indent=2)
    write_atomically(group / "zarr.json", lambda tmp: tmp.write_text(text))
