"""The top-level API (issue 26): ``duoseg.load(MODEL).segment(image)`` gives ``duoseg
predict``'s labels for a path, a nibabel image and an array with its affine (LPS too);
``duoseg.evaluate`` returns the table as data; ``import duoseg`` stays cheap. (Here,
beside the engine's tests, for their trained-run fixtures.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duoseg
import nibabel as nib
import numpy as np
import pytest
from duoseg.apps.cli import main
from duoseg.core.errors import DataError, PredictError
from duoseg.core.inference.score_files import format_table

CASE = "ct_train_1003"


@pytest.fixture(scope="module")
def source(cache: Path) -> Path:
    return Path(cache).parent / "src" / f"{CASE}_image.nii.gz"


@pytest.fixture(scope="module")
def predicted(two_stage_run: Path, source: Path, tmp_path_factory) -> nib.Nifti1Image:
    """``duoseg predict``'s label file for ``source``: what segment must equal."""
    out = tmp_path_factory.mktemp("predict") / f"{CASE}_label.nii.gz"
    assert main(["predict", str(two_stage_run), str(source), str(out)]) == 0
    return nib.load(out)


@pytest.fixture(scope="module")
def model(two_stage_run: Path) -> duoseg.Segmenter:
    return duoseg.load(two_stage_run)


def same_labels(segmented: nib.Nifti1Image, expected: nib.Nifti1Image) -> None:
    np.testing.assert_array_equal(np.asarray(segmented.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_allclose(segmented.affine, expected.affine)


def test_segment_a_path_gives_predicts_labels(model, source, predicted) -> None:
    segmented = model.segment(source)
    assert segmented.get_data_dtype() == np.int16
    same_labels(segmented, predicted)


def test_segment_a_nibabel_image_gives_predicts_labels(model, source, predicted) -> None:
    same_labels(model.segment(nib.load(source)), predicted)


def test_segment_an_array_with_an_lps_affine_gives_predicts_labels(
    model, source, predicted
) -> None:
    """An ITK-style affine: voxel -> LPS world mm (SimpleITK, DICOM)."""
    image = nib.load(source)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    same_labels(model.segment(image.get_fdata(dtype=np.float32), lps, space="LPS"), predicted)


def test_segment_an_array_in_another_orientation_answers_in_its_grid(
    model, source, predicted
) -> None:
    """The phantoms' voxels run L, P, S (as MM-WHS's do); the same image with its voxels
    running R, A, S is labelled alike, in its own voxel order."""
    image = nib.load(source)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    to_ras = nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(("R", "A", "S"))
    )
    array = nib.orientations.apply_orientation(image.get_fdata(dtype=np.float32), to_ras)
    affine = image.affine @ nib.orientations.inv_ornt_aff(to_ras, image.shape)
    segmented = model.segment(array, affine)
    expected = nib.orientations.apply_orientation(np.asarray(predicted.dataobj), to_ras)
    np.testing.assert_array_equal(np.asarray(segmented.dataobj), expected)
    np.testing.assert_allclose(segmented.affine, affine)


def test_segment_from_a_package_equals_segment_from_the_run(model, two_stage_run, source,
                                                            tmp_path) -> None:  # fmt: skip
    package = duoseg.export(two_stage_run, tmp_path / "model.zip", description="tiny")
    from_zip = duoseg.load(package)
    assert from_zip.classes == model.classes
    same_labels(from_zip.segment(source), model.segment(source))


def test_probabilities_on_request_in_the_inputs_grid(model, source, predicted) -> None:
    labels, probabilities = model.segment(source, probabilities=True, memory_budget_mib=2)
    same_labels(labels, predicted)  # a small budget: several slabs, the same labels
    data = np.asarray(probabilities.dataobj)
    assert data.shape == (*predicted.shape, len(model.classes) + 1)
    np.testing.assert_allclose(data.sum(-1), 1.0, atol=1e-2)
    np.testing.assert_allclose(probabilities.affine, predicted.affine)


def test_method_options_reach_the_method(model, two_stage_run, source, tmp_path) -> None:
    out = tmp_path / "net1.nii.gz"
    flags = ["--method-option", "net1_only=true"]
    assert main(["predict", str(two_stage_run), str(source), str(out), *flags]) == 0
    same_labels(model.segment(source, method_options={"net1_only": True}), nib.load(out))


def test_bad_images_are_refused_naming_them(model, cache, source) -> None:
    with pytest.raises(PredictError, match=r"^scan: an array needs its affine"):
        model.segment(np.zeros((30, 30, 30), np.float32), name="scan")
    with pytest.raises(PredictError, match="has its own affine; pass affine only with an array"):
        model.segment(source, np.eye(4))
    with pytest.raises(PredictError, match=r"holds 4 cases .*segment takes one image"):
        model.segment(source.parent)
    bad = np.zeros((30, 30, 30), np.float32)
    bad[1, 2, 3] = np.inf
    with pytest.raises(DataError, match="image: field data: 1 NaN/Inf intensity"):
        model.segment(bad, np.eye(4))


def test_evaluate_returns_the_table_as_data(predicted, source, tmp_path) -> None:
    prediction = tmp_path / f"{CASE}_label.nii.gz"
    nib.save(predicted, prediction)
    result = duoseg.evaluate(prediction, source.parent / f"{CASE}_label.nii.gz")
    assert list(result.labels) == ["Myo", "LA", "LV", "RA", "RV", "AA", "PA"]
    assert set(result.table) == {"dice", "jaccard", "asd", "hd95"}
    assert 0.0 <= result.table["dice"]["WH"]["mean"] <= 1.0
    assert list(result.cases) == [CASE]
    assert str(result) == format_table(result.as_dict())


def test_importing_duoseg_is_cheap_and_makes_no_registry() -> None:
    code = (
        "import sys, duoseg\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('torch', 'duoseg.')))\n"
        "assert not loaded, loaded\n"
        "assert callable(duoseg.load) and 'duoseg.core.registry' in sys.modules\n"
        "assert not [m for m in sys.modules if m.startswith('duoseg.plugins')], 'plugins'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
