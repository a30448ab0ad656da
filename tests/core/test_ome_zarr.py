"""OME-Zarr (NGFF 0.5) metadata on predictions and caches, read back by the ``ome-zarr``
package (napari-ome-zarr's reader) and checked against ``ome-zarr-models``' schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import zarr
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.ngff import TAB10, class_colours, write_group_metadata
from duoseg.core.errors import DataError
from duoseg.core.inference.outputs import PredictionReader, ZarrSink, finish_output, prepare_output
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.streaming import Options
from duoseg.core.records.case import CaseMeta, LevelMeta
from duoseg.core.records.preprocessing import Level
from duoseg.phantoms import make_case, write_case
from duoseg.plugins.importers import MMWHSImporter
from ome_zarr import OMEZarrLabels, OMEZarrMultiscale
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Node, Reader
from ome_zarr_models.v05 import Image
from ome_zarr_models.v05.image_label import ImageLabelAttrs

MMWHS = ("background", "Myo", "LA", "LV", "RA", "RV", "AA", "PA")
MMWHS_VALUES = (0, 205, 420, 500, 550, 600, 820, 850)
AXES = [{"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")]


def read(path: Path) -> Node:
    """The node ome-zarr's reader makes of the group at ``path`` (the first it yields)."""
    location = parse_url(str(path))
    assert location is not None, f"ome-zarr finds nothing at {path}"
    return next(iter(Reader(location)()))


def ome(group: Path) -> Any:
    return json.loads((group / "zarr.json").read_text())["attributes"]["ome"]


def test_the_palette_is_the_overlays_tab10_ranked_by_label_value() -> None:
    tab10 = matplotlib.colormaps["tab10"].colors
    np.testing.assert_allclose(np.array(TAB10) / 255, tab10, atol=0.5 / 255)
    orange, green, red = (TAB10[i] for i in (1, 2, 3))
    assert [c[:3] for c in class_colours(MMWHS_VALUES)[:3]] == [orange, green, red]  # Myo LA LV
    # Another label map's class order: colours still follow the values, as in the overlays.
    assert [c[:3] for c in class_colours((0, 30, 10, 20))] == [red, orange, green]


def test_a_predicted_case_is_an_ome_zarr_label_image(tmp_path: Path) -> None:
    meta = _meta(spacing=(2.5, 0.75, 0.6))
    labels = (np.arange(6 * 5 * 4).reshape(6, 5, 4) % 8).astype(np.uint8)
    out = tmp_path / "pred.zarr"
    prepare_output(out, overwrite=False)
    sink = ZarrSink(out)
    sink.begin(meta, probabilities=True)
    sink.write(0, labels, np.full((8, *labels.shape), 0.125, np.float16))
    case = out / "cases" / "c1"
    assert "ome" not in json.loads((case / "zarr.json").read_text())["attributes"], (
        "a case is an image for viewers only once its labels are final"
    )
    sink.end(meta, None)
    finish_output(out, ["c1"], [])

    node = read(case)
    assert any(isinstance(s, Label) for s in node.specs)
    assert node.metadata["axes"] == AXES
    assert node.metadata["coordinateTransformations"] == [
        [{"type": "scale", "scale": [2.5, 0.75, 0.6]}]
    ]
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    properties = node.metadata["properties"]
    assert [properties[v]["class"] for v in range(8)] == list(MMWHS)
    assert properties[1]["source-value"] == 205
    assert node.metadata["color"][0][3] == 0, "background is transparent"
    assert node.metadata["color"][1] == [c / 255 for c in TAB10[1]] + [1]  # Myo: orange
    ImageLabelAttrs.model_validate(ome(case))  # the schema's rules for the metadata
    # ome-zarr's newer classes, what recent napari-ome-zarr reads with, see it alike.
    loaded = OMEZarrMultiscale.from_ome_zarr(zarr.open_group(str(case)))
    assert isinstance(loaded, OMEZarrLabels)
    assert loaded.images[0].scale == {"z": 2.5, "y": 0.75, "x": 0.6}
    # duoseg's own reader and chunk layout are unchanged: one chunk file per slice.
    assert (case / "labels" / "c" / "5" / "0" / "0").is_file()
    np.testing.assert_array_equal(PredictionReader(out).array("c1")[...], labels)
    assert PredictionReader(out).verify() == []
    assert zarr.open_array(str(case / "probabilities")).metadata.dimension_names == (
        "c", "z", "y", "x",
    )  # fmt: skip


def test_duoseg_predict_writes_the_cases_spacing(
    registry: Registry, two_stage_run: Path, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred.zarr"
    predict_paths(two_stage_run, cache, out, options=Options(), device="cpu",
                  cases=["ct_train_1002"], overwrite=False, registry=registry)  # fmt: skip
    with open_cache(cache, registry) as source:
        spacing = list(source.case("ct_train_1002").meta.spacing)
    node = read(out / "cases" / "ct_train_1002")
    assert node.metadata["axes"] == AXES
    assert node.metadata["coordinateTransformations"] == [[{"type": "scale", "scale": spacing}]]
    np.testing.assert_array_equal(
        np.asarray(node.data[0]), PredictionReader(out).array("ct_train_1002")[...]
    )
    assert node.metadata["properties"][3]["class"] == "LV"


def test_a_cache_case_is_an_ome_zarr_image_with_its_coarse_level(
    registry: Registry, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    write_case(make_case(1, 0, "ct", (40, 36, 24)), source)  # about 6 x 5.3 x 6.7 mm
    target = tmp_path / "cache.zarr"
    store = registry.build("store", "zarr", chunks=(8, 16, 16))
    build_cache(source, target, importer=MMWHSImporter(), store=store,
                levels=[Level("coarse", 8.0)])  # fmt: skip
    group = target / "cases" / "ct_train_1001"
    with open_cache(target, registry) as cache:
        meta = cache.case("ct_train_1001").meta
        assert cache.verify() == []  # duoseg cache verify
    full, coarse = np.array(meta.spacing), np.array(meta.coarse.spacing)
    assert (coarse > full).all()

    node = read(group)
    assert any(isinstance(s, Multiscales) for s in node.specs)
    assert node.metadata["axes"] == AXES
    assert [np.asarray(level).shape for level in node.data] == [meta.shape, meta.coarse.shape]
    (fine_scale,), (coarse_scale, shift) = node.metadata["coordinateTransformations"]
    np.testing.assert_allclose(fine_scale["scale"], full)
    np.testing.assert_allclose(coarse_scale["scale"], coarse)
    # Both levels span the same box: first voxel centres half a voxel in from its edge.
    np.testing.assert_allclose(shift["translation"], (coarse - full) / 2)
    # The label, as a second multiscale chosen by name; the whole group passes the schema.
    label = ome(group)["multiscales"][1]
    assert label["name"] == "label"
    assert [d["path"] for d in label["datasets"]] == ["label", "coarse_label"]
    loaded = OMEZarrMultiscale.from_ome_zarr(zarr.open_group(str(group)))
    assert [list(level.scale.values()) for level in loaded.images] == [list(full), list(coarse)]
    validated = Image.from_zarr(zarr.open_group(str(group))).ome_attributes
    assert [m.name for m in validated.multiscales] == ["ct_train_1001", "label"]


def test_a_coarse_grid_finer_than_the_data_is_no_level(duoseg_phantom_cache: Path) -> None:
    """The test phantoms are about 5 mm: their 3 mm grid is no lower resolution."""
    group = duoseg_phantom_cache / "cases" / "ct_train_1001"
    node = read(group)
    assert len(node.data) == 1
    assert [[d["path"] for d in m["datasets"]] for m in ome(group)["multiscales"]] == [
        ["image"], ["label"],
    ]  # fmt: skip
    Image.from_zarr(zarr.open_group(str(group)))


def _meta(spacing: tuple[float, float, float]) -> CaseMeta:
    return CaseMeta(
        case_id="c1", shape=(6, 5, 4), spacing=spacing,
        levels={"coarse": LevelMeta(3.0, (2, 2, 1), (3.0, 3.0, 3.0))},
        canonical_affine=np.eye(4).tolist(),
        source_affine=np.eye(4).tolist(), source_shape=(4, 5, 6), class_names=MMWHS,
        label_values=MMWHS_VALUES, normalisation={}, checksums={}, has_label=False,
    )  # fmt: skip


def test_a_group_without_zarr_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"gone/zarr\.json: not a readable Zarr group"):
        write_group_metadata(tmp_path / "gone", {"version": "0.5"})
