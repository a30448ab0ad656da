"""The importers on phantom files and on each bad input the data issue lists."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from duoseg.core.data.orientation import to_source
from duoseg.core.errors import DataError
from duoseg.phantoms import make_case, write_case
from duoseg.plugins.importers import MMWHSImporter, NiftiPairImporter

SIZE = (32, 28, 20)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    write_case(make_case(0, 0, "ct", SIZE), tmp_path)
    return tmp_path


def image_path(folder: Path) -> Path:
    return folder / "ct_train_1001_image.nii.gz"


def label_path(folder: Path) -> Path:
    return folder / "ct_train_1001_label.nii.gz"


def rewrite(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None,
            pixdim: tuple[float, float, float] | None = None) -> None:  # fmt: skip
    old = nib.load(path)
    image = nib.Nifti1Image(old.get_fdata() if data is None else data,
                            old.affine if affine is None else affine)  # fmt: skip
    nib.save(image, path)
    if pixdim is not None:  # nibabel would repair it on save: patch the stored header
        raw = gzip.decompress(path.read_bytes())
        patched = raw[:80] + struct.pack("<3f", *pixdim) + raw[92:]
        path.write_bytes(gzip.compress(patched))


def load(folder: Path, importer: NiftiPairImporter | None = None):
    importer = importer or MMWHSImporter()
    return importer.load(importer.discover(folder)[0])


def test_mmwhs_classes_follow_the_label_values(source: Path) -> None:
    """The canonical arrays and spacing: ImporterConformance (tests/test_conformance.py)."""
    case = load(source)
    assert case.class_names == ("background", "Myo", "LA", "LV", "RA", "RV", "AA", "PA")
    assert case.label_values == (0, 205, 420, 500, 550, 600, 820, 850)


def test_labels_go_back_to_the_source_grid(source: Path) -> None:
    case = load(source)
    back = to_source(np.asarray(case.label_values)[case.label], case.source_affine)
    np.testing.assert_array_equal(back, nib.load(label_path(source)).get_fdata())


def test_a_missing_partner_file_is_named(source: Path) -> None:
    label_path(source).unlink()
    with pytest.raises(
        DataError,
        match=r"ct_train_1001_image.nii.gz: image file without its partner ct_train_1001_label",
    ):
        MMWHSImporter().discover(source)
    assert MMWHSImporter(require_labels=False).discover(source)[0].label is None


def test_an_orphan_label_file_is_named(source: Path) -> None:
    image_path(source).unlink()
    with pytest.raises(DataError, match=r"label file without its partner ct_train_1001_image"):
        MMWHSImporter().discover(source)


def test_shape_mismatch(source: Path) -> None:
    rewrite(label_path(source), data=np.zeros((10, 10, 10)))
    with pytest.raises(
        DataError, match=r"label.nii.gz: field dim: label shape \(10, 10, 10\) differs from image"
    ):
        load(source)


def test_affine_mismatch(source: Path) -> None:
    affine = nib.load(image_path(source)).affine.copy()
    affine[0, 3] += 5
    rewrite(label_path(source), affine=affine)
    with pytest.raises(
        DataError, match=r"label.nii.gz: field sform/qform: label affine .* differs"
    ):
        load(source)


@pytest.mark.parametrize("shape", [(32, 28), (32, 28, 20, 2)])
def test_non_3d_data(source: Path, shape: tuple[int, ...]) -> None:
    rewrite(image_path(source), data=np.zeros(shape))
    with pytest.raises(
        DataError,
        match=rf"image.nii.gz: field dim: a 3-D volume is required, got shape \({shape[0]}, ",
    ):
        load(source)


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 1.0), (1.0, -1.5, 1.0), (1.0, 1.0, float("nan"))])
def test_bad_spacing(source: Path, pixdim: tuple[float, float, float]) -> None:
    rewrite(image_path(source), pixdim=pixdim)
    with pytest.raises(
        DataError, match=r"image.nii.gz: field pixdim: voxel spacing .* must be finite and > 0"
    ):
        load(source)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_intensities(source: Path, bad: float) -> None:
    data = nib.load(image_path(source)).get_fdata()
    data[3, 4, 5] = bad
    rewrite(image_path(source), data=data.astype(np.float32))
    with pytest.raises(DataError, match=r"image.nii.gz: field data: 1 NaN/Inf intensity values"):
        load(source)


def test_non_integer_labels(source: Path) -> None:
    data = nib.load(label_path(source)).get_fdata()
    data[1, 1, 1] = 205.5
    rewrite(label_path(source), data=data.astype(np.float32))
    with pytest.raises(
        DataError, match=r"label.nii.gz: field data: non-integer label values \[205.5\]"
    ):
        load(source)


def test_unknown_label_values_are_named_unless_mapped(source: Path) -> None:
    data = nib.load(label_path(source)).get_fdata()
    data[data == 420] = 421
    rewrite(label_path(source), data=data.astype(np.int16))
    with pytest.raises(
        DataError, match=r"label.nii.gz: field data: label values \[421\] are not in the label map"
    ):
        load(source)
    case = load(source, MMWHSImporter(mapping={"421": 420}))
    assert (case.label == 2).any()  # LA


def test_a_file_that_is_not_nifti(source: Path) -> None:
    image_path(source).write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match=r"image.nii.gz: field header: not a readable NIfTI file"):
        load(source)


def test_the_generic_importer_takes_a_label_map(source: Path) -> None:
    importer = NiftiPairImporter(
        {"LV": 500, "Myo": 205}, mapping={str(v): 0 for v in (420, 550, 600, 820, 850)}
    )
    case = load(source, importer)
    assert case.class_names == ("background", "LV", "Myo")
    assert set(np.unique(case.label)) == {0, 1, 2}
    with pytest.raises(DataError, match="label map values must be distinct and non-zero"):
        NiftiPairImporter({"a": 1, "b": 1})


def test_an_empty_or_absent_source_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \*_image.nii\[.gz\] files found"):
        MMWHSImporter().discover(tmp_path)
    with pytest.raises(DataError, match="source folder not found"):
        MMWHSImporter().discover(tmp_path / "absent")


def test_a_hand_made_mmwhs_set_in_an_unusual_orientation(tmp_path: Path) -> None:
    """Not a phantom: arrays made here, stored with axes permuted (k, i, j) and flipped."""
    from duoseg.core import load_plugins
    from duoseg.core.data.cache import open_cache
    from duoseg.core.data.cache_build import build_cache

    label = np.zeros((20, 12, 16), np.int16)  # file axes (i, j, k)
    label[2:8, 3:9, 4:12] = 500
    label[10:14, 2:6, 1:5] = 205
    image = np.where(label > 0, 300, -900).astype(np.int16)
    affine = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, 1.0, 0, 3], [0, 0, 0, 1]])
    for name, data in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"ct_train_2001_{name}.nii.gz")
    registry = load_plugins(entry_points=False)
    build_cache(tmp_path, tmp_path / "c.zarr", importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr"))  # fmt: skip
    case = open_cache(tmp_path / "c.zarr", registry).case("ct_train_2001")
    # RAS: file j (+1.0 mm along z) is axial; i (+1.5 mm along y); k (-2.0 mm along x).
    assert case.meta.shape == (12, 20, 16)
    assert case.meta.spacing == (1.0, 1.5, 2.0)
    expected = np.flip(label.transpose(1, 0, 2), axis=2)
    values = np.asarray(case.meta.label_values)[case.label[...]]
    np.testing.assert_array_equal(values, expected)
    back = to_source(values, np.asarray(case.meta.source_affine))
    np.testing.assert_array_equal(back, label)
