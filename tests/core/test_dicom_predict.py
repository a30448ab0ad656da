"""``duoseg predict`` on a folder of DICOM series: NIfTI, Zarr and DICOM-SEG out, each
checked voxel for voxel and in physical space against the same case given as NIfTI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from duoseg.apps.cli import main
from duoseg.core.data.orientation import canonical_affine, to_canonical
from duoseg.core.errors import DataError, PredictError
from duoseg.core.inference import predict as predicting
from duoseg.core.inference.dicom_seg import CARDIAC, DicomSegSink, _check_fits
from duoseg.core.inference.outputs import PredictionReader, is_complete
from duoseg.plugins.dicom import DicomImporter
from duoseg.plugins.importers import MMWHS_LABELS

from tests.dicom_series import LPS, Orientation, Written, write_pair

highdicom = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

# Oblique, stored with i and k reversed, files named and numbered against their order.
MIXED = Orientation("mixed", flips=(True, False, True), degrees=17.0, reverse_instances=True,
                    shuffle_names=True)  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    root = tmp_path_factory.mktemp("dicom-predict")
    return write_pair(root / "dicom", root / "nifti", MIXED, intercept=-1024.0)


def predict(run: Path, source: Path, output: Path, *flags: str) -> None:
    assert main(["predict", str(run), str(source), str(output), *flags]) == 0


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    return to_canonical(data, image.affine), canonical_affine(image.affine, data.shape)


def test_nifti_and_zarr_outputs_equal_the_nifti_inputs(two_stage_run, written, tmp_path) -> None:
    name = written.case.name
    predict(two_stage_run, written.series.parent, tmp_path / "from_dicom")
    predict(two_stage_run, written.nifti_image, tmp_path / "from_nifti")
    ours, our_affine = canonical(tmp_path / "from_dicom" / f"{name}_label.nii.gz")
    theirs, their_affine = canonical(tmp_path / "from_nifti" / f"{name}_label.nii.gz")
    assert len(np.unique(ours)) > 1, "a labelling that could not show a wrong orientation"
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-4)
    predict(two_stage_run, written.series.parent, tmp_path / "from_dicom.zarr")
    predict(two_stage_run, written.nifti_image, tmp_path / "from_nifti.zarr")
    a = PredictionReader(tmp_path / "from_dicom.zarr").array(name)[...]
    b = PredictionReader(tmp_path / "from_nifti.zarr").array(name)[...]
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def seg_outputs(two_stage_run, written, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The series predicted once to NIfTI (``nifti/``) and once to DICOM-SEG (``seg/``)."""
    root = tmp_path_factory.mktemp("seg-outputs")
    predict(two_stage_run, written.series.parent, root / "nifti")
    predict(two_stage_run, written.series.parent, root / "seg", "--format", "dicom-seg")
    return root


def test_dicom_seg_output_reads_back_to_the_labels_and_geometry(written, seg_outputs) -> None:
    name = written.case.name
    seg = highdicom.seg.segread(seg_outputs / "seg" / f"{name}_seg.dcm")
    source = pydicom.dcmread(written.files[0], stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    labels = json.loads((seg_outputs / "nifti" / "duoseg-complete.json").read_text())["labels"]
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == list(labels)
    lv = segments[list(labels).index("LV") + 1].SegmentedPropertyTypeCodeSequence[0]
    assert (lv.CodeValue, lv.CodingSchemeDesignator) == ("87878005", "SCT")
    # Every labelled voxel of the SEG, placed by its own geometry, onto the NIfTI grid.
    nifti = nib.load(seg_outputs / "nifti" / f"{name}_label.nii.gz")
    values = np.asarray(nifti.dataobj)
    volume = seg.get_volume(combine_segments=True)
    to_nifti = np.linalg.inv(nifti.affine) @ LPS @ volume.affine  # SEG index -> NIfTI index
    np.testing.assert_allclose(to_nifti, np.round(to_nifti), atol=1e-3)
    index = np.indices(volume.array.shape).reshape(3, -1)
    i, j, k = np.round(to_nifti[:3, :3] @ index + to_nifti[:3, 3:]).astype(int)
    lookup = np.array([0, *labels.values()])
    placed = np.zeros_like(values)
    placed[i, j, k] = lookup[volume.array.reshape(-1)]
    assert np.count_nonzero(placed) > 0
    np.testing.assert_array_equal(placed, values)


@pytest.mark.parametrize("kind", ["nifti file", "cache"])
def test_dicom_seg_needs_a_dicom_input(two_stage_run, written, tmp_path, request, kind):
    source = written.nifti_image if kind == "nifti file" else request.getfixturevalue("cache")
    capsys = request.getfixturevalue("capsys")
    code = main(["predict", str(two_stage_run), str(source), str(tmp_path / "seg"),
                 "--format", "dicom-seg"])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert f"--format dicom-seg: INPUT {source} is not a folder of DICOM series" in error, error
    assert not (tmp_path / "seg").exists()


def test_a_format_that_does_not_fit_output_is_refused(two_stage_run, written, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    code = main(["predict", str(two_stage_run), str(written.series.parent), str(output),
                 "--format", "dicom-seg"])  # fmt: skip
    assert code == 2
    assert f"{output}: --format dicom-seg does not fit OUTPUT" in capsys.readouterr().err


def test_case_picks_series_and_an_unknown_one_is_named(two_stage_run, written, tmp_path, capsys):
    source = written.series.parent
    code = main(["predict", str(two_stage_run), str(source), str(tmp_path / "o"),
                 "--case", "nope"])  # fmt: skip
    assert code == 2
    assert f"{source}: no case ['nope']; its cases: ['{written.case.name}']" in (
        capsys.readouterr().err
    )
    predict(two_stage_run, source, tmp_path / "one", "--case", written.case.name)
    assert (tmp_path / "one" / f"{written.case.name}_label.nii.gz").is_file()


def test_dicom_seg_output_reads_back_through_the_importer_as_labels(
    written, seg_outputs, tmp_path
) -> None:
    """What --format dicom-seg writes labels its series for the ``dicom`` importer."""
    name = written.case.name
    source = tmp_path / "src"
    shutil.copytree(written.series, source / name)
    shutil.copy(seg_outputs / "seg" / f"{name}_seg.dcm", source / "seg.dcm")
    labels = json.loads((seg_outputs / "nifti" / "duoseg-complete.json").read_text())["labels"]
    importer = DicomImporter(labels)
    (pair,) = importer.discover(source)
    assert pair.label == source / "seg.dcm"
    values, _ = canonical(seg_outputs / "nifti" / f"{name}_label.nii.gz")
    lookup = np.zeros(max(labels.values()) + 1, np.uint8)
    lookup[list(labels.values())] = np.arange(1, len(labels) + 1)
    np.testing.assert_array_equal(importer.load(pair).label, lookup[values])


def test_a_resumed_output_of_another_format_is_refused(
    two_stage_run, written, tmp_path, capsys, monkeypatch
) -> None:
    """A NIfTI run killed before its record; a DICOM-SEG run into that OUTPUT would take
    the NIfTI cases as done. Refused naming both formats; --overwrite starts afresh."""
    out, source, name = tmp_path / "out", written.series.parent, written.case.name

    def killed_before_the_record(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(predicting, "finish_output", killed_before_the_record)
    with pytest.raises(KeyboardInterrupt):
        main(["predict", str(two_stage_run), str(source), str(out)])
    monkeypatch.undo()
    assert (out / f"{name}_label.nii.gz").is_file() and not is_complete(out)
    code = main(["predict", str(two_stage_run), str(source), str(out), "--format", "dicom-seg"])
    assert code == 2
    assert "format: 'nifti' there, 'dicom-seg' now" in capsys.readouterr().err
    predict(two_stage_run, source, out, "--format", "dicom-seg", "--overwrite")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        f"{name}_seg.dcm", "duoseg-complete.json", "duoseg-prediction.json",
    ]  # fmt: skip


def test_probabilities_without_zarr_are_refused_before_output_exists(
    written, tmp_path, capsys
) -> None:
    out = tmp_path / "seg"
    code = main(["predict", str(tmp_path / "run"), str(written.series.parent), str(out),
                 "--format", "dicom-seg", "--probabilities"])  # fmt: skip
    assert code == 2
    assert (
        f"{out}: --probabilities needs a format that stores them (zarr: *.zarr)"
        in capsys.readouterr().err
    )
    assert not out.exists()


def test_without_highdicom_the_sink_is_refused_when_made(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(DataError, match=r'--format dicom-seg needs highdicom: pip install "duo'):
        DicomSegSink(tmp_path, {})


def test_labels_that_no_longer_fit_the_source_are_named(tmp_path) -> None:
    files = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    frames = np.zeros((2, 4, 5), np.uint8)
    fits = [SimpleNamespace(Rows=4, Columns=5)] * 2
    _check_fits("ct_1", frames, fits, files)
    changed = [fits[0], SimpleNamespace(Rows=4, Columns=6)]
    with pytest.raises(PredictError, match=r"b\.dcm: case ct_1: labels of shape \(2, 4, 5\) do "
                       r"not fit .* this one 4 x 6\): did the files change"):  # fmt: skip
        _check_fits("ct_1", frames, changed, files)
    with pytest.raises(PredictError, match=r"a\.dcm: case ct_1: Rows/Columns unreadable"):
        _check_fits("ct_1", frames, [SimpleNamespace(Rows=4)] * 2, files)


def test_every_mmwhs_class_has_its_snomed_code() -> None:
    assert set(CARDIAC) == set(MMWHS_LABELS)
