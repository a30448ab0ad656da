"""The ``dicom`` importer: synthetic series in several orientations import exactly as the
equivalent NIfTI files do, and every bad series the DICOM issue lists is refused naming
the series, the file where one is at fault, and the tag."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from duoseg.apps.cli import main
from duoseg.core.data.cache_build import build_cache
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import SourcePair
from duoseg.phantoms import make_case
from duoseg.plugins.dicom import DicomImporter
from duoseg.plugins.importers import MMWHS_LABELS, MMWHSImporter
from duoseg.testing import ExpectedCase, ImporterConformance

from tests.dicom_series import ORIENTATIONS, Orientation, Written, write_pair, write_series

pydicom = pytest.importorskip("pydicom")
highdicom = pytest.importorskip("highdicom")


def make(tmp_path: Path, orientation: Orientation = ORIENTATIONS[0], **options: Any) -> Written:
    return write_pair(tmp_path / "dicom", tmp_path / "nifti", orientation, **options)


def load_one(folder: Path, **kwargs: Any) -> Any:
    importer = DicomImporter(**kwargs)
    (pair,) = importer.discover(folder)
    return importer.load(pair)


def refused(folder: Path, *patterns: str, **kwargs: Any) -> str:
    """Importing ``folder`` fails with a DataError whose message has every pattern."""
    with pytest.raises(DataError) as info:
        load_one(folder, **kwargs)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    return message


class TestDicomConformance(ImporterConformance):
    """The importer suite every importer keeps, on DICOM series with NIfTI masks."""

    name = "dicom"

    def write_source(self, folder: Path) -> dict[str, ExpectedCase]:
        expected = {}
        for number in (1, 0):
            written = write_pair(folder, folder.parent / "nifti", number=number, size=self.size)
            case = written.case
            expected[case.name] = ExpectedCase(case.image, case.label, case.spacing)
        return expected

    def corrupt(self, pair: SourcePair) -> Path:
        """Keep the preamble (so it is still found) and damage everything after it."""
        bad = pair.files[0]
        bad.write_bytes(bad.read_bytes()[:132] + b"\x07" * 40)
        return bad


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=lambda o: o.name)
def test_a_series_imports_as_its_nifti_twin(tmp_path: Path, orientation: Orientation) -> None:
    written = make(tmp_path, orientation, intercept=-1024.0)  # stored unsigned, as scanners do
    case = load_one(written.series.parent)
    twin = MMWHSImporter().load(SourcePair("twin", written.nifti_image, written.nifti_label))
    np.testing.assert_array_equal(case.image, twin.image)
    np.testing.assert_array_equal(case.label, twin.label)
    np.testing.assert_allclose(case.spacing, twin.spacing, rtol=1e-6)
    np.testing.assert_allclose(case.canonical_affine, twin.canonical_affine, atol=1e-6)
    np.testing.assert_array_equal(case.image, written.case.image.astype(np.float32))
    assert case.case_id == written.case.name
    assert case.class_names == twin.class_names and case.label_values == twin.label_values


def test_rescale_slope_and_intercept_give_the_modality_values(tmp_path: Path) -> None:
    written = make(tmp_path, slope=0.5, intercept=-2048.0)
    np.testing.assert_array_equal(
        load_one(written.series.parent).image, written.case.image.astype(np.float32)
    )


def test_series_are_grouped_by_uid_not_by_folder(tmp_path: Path) -> None:
    """Two series interleaved in one folder: two cases, each in its own slice order."""
    written = make(tmp_path)
    other = make_case(0, 1, "ct", (48, 40, 24))
    data = other.image.transpose(2, 1, 0)[::-1, ::-1]
    interleaved = Orientation("interleaved", shuffle_names=True)
    write_series(written.series, np.ascontiguousarray(data), written.affine, series_number=7,
                 prefix="b", orientation=interleaved)  # fmt: skip
    importer = DicomImporter(require_labels=False)
    pairs = importer.discover(written.series.parent)
    name = written.case.name
    assert [p.case_id for p in pairs] == [f"{name}_3", f"{name}_7"]
    for pair, want in zip(pairs, (written.case, other), strict=True):
        np.testing.assert_array_equal(importer.load(pair).image, want.image.astype(np.float32))


def test_files_that_are_not_images_are_left_out(tmp_path: Path) -> None:
    written = make(tmp_path)
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    report = Dataset()  # a structured report: a series of its own, without pixels
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.SeriesInstanceUID = generate_uid()
    report.save_as(written.series / "report.dcm", enforce_file_format=True)
    (written.series / "notes.txt").write_text("not DICOM")
    pairs = DicomImporter().discover(written.series.parent)
    assert [(p.case_id, len(p.files)) for p in pairs] == [(written.case.name, 24)]


def test_labels_from_a_dicom_seg(tmp_path: Path) -> None:
    """A DICOM-SEG whose segments are named after the classes labels its series."""
    written = make(tmp_path)
    (written.series.parent / f"{written.case.name}_label.nii.gz").unlink()
    want = MMWHSImporter().load(SourcePair("twin", written.nifti_image, written.nifti_label))
    frames = nib.load(written.nifti_label).get_fdata().astype(np.int64).transpose(2, 1, 0)
    lookup = np.zeros(851, np.uint8)
    lookup[list(MMWHS_LABELS.values())] = np.arange(1, 8)
    write_seg(written.files, lookup[frames], list(MMWHS_LABELS), tmp_path / "dicom" / "seg.dcm")
    importer = DicomImporter()
    (pair,) = importer.discover(written.series.parent)
    assert pair.label == tmp_path / "dicom" / "seg.dcm"
    np.testing.assert_array_equal(importer.load(pair).label, want.label)


def write_seg(files: list[Path], frames: np.ndarray, names: list[str], target: Path) -> None:
    """A DICOM-SEG of ``frames`` (slice, row, column class indices) over ``files``."""
    from duoseg.core.inference.dicom_seg import segments

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    seg = highdicom.seg.Segmentation(
        source_images=sources, pixel_array=frames.astype(np.uint8),
        segmentation_type="BINARY", segment_descriptions=segments(highdicom, names, "test"),
        series_instance_uid=highdicom.UID(), series_number=2, sop_instance_uid=highdicom.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0",
    )  # fmt: skip
    seg.save_as(target)


def test_a_seg_segment_outside_the_label_map_is_named(tmp_path: Path) -> None:
    written = make(tmp_path)
    (written.series.parent / f"{written.case.name}_label.nii.gz").unlink()
    frames = np.zeros((24, 40, 48), np.uint8)
    frames[5:9, 10:20, 10:20] = 1
    write_seg(written.files, frames, ["tumour"], tmp_path / "dicom" / "seg.dcm")
    refused(written.series.parent, r"seg\.dcm: tag SegmentLabel \(0062,0005\)", "'tumour'")


def test_cache_build_from_dicom_equals_the_nifti_build(tmp_path: Path) -> None:
    written = make(tmp_path, ORIENTATIONS[3])
    assert main(["cache", "build", str(tmp_path / "dicom"), str(tmp_path / "d.zarr"),
                 "--importer", "dicom"]) == 0  # fmt: skip
    build_cache(tmp_path / "nifti", tmp_path / "n.zarr", importer=MMWHSImporter(),
                store=_store())  # fmt: skip
    from duoseg.core.data.cache import open_cache

    with open_cache(tmp_path / "d.zarr") as a, open_cache(tmp_path / "n.zarr") as b:
        name = written.case.name
        assert a.cases() == b.cases() == [name]
        for array in ("image", "label", "coarse_image", "coarse_label"):
            np.testing.assert_array_equal(getattr(a.case(name), array)[...],
                                          getattr(b.case(name), array)[...])  # fmt: skip
    # Incremental: the files' checksums are the case's; touching one slice rebuilds it.
    assert build_cache(tmp_path / "dicom", tmp_path / "d.zarr", importer=DicomImporter(),
                       store=_store()).skipped == [name]  # fmt: skip
    data = bytearray(written.files[3].read_bytes())
    data[-1] ^= 1
    written.files[3].write_bytes(bytes(data))
    assert build_cache(tmp_path / "dicom", tmp_path / "d.zarr", importer=DicomImporter(),
                       store=_store()).written == [name]  # fmt: skip


def _store() -> Any:
    from duoseg.core import load_plugins

    return load_plugins(entry_points=False).build("store", "zarr")


def test_a_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    written = make(tmp_path)
    written.files[10].unlink()
    refused(written.series.parent, r"series [0-9.]+: tag ImagePositionPatient \(0020,0032\)",
            "slice spacing is not uniform", "missing slice", written.files[9].name,
            written.files[11].name)  # fmt: skip


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    def tilt(k: int, ds: Any) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.9 * k, z]  # each slice shifted in-plane
        ds.GantryDetectorTilt = "15"

    written = make(tmp_path, edit=tilt)
    refused(written.series.parent, "ImagePositionPatient", "gantry tilt",
            r"GantryDetectorTilt \(0018,1120\) = '?15", str(written.series))  # fmt: skip


def _edit_one(path: Path, change: Any) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_a_missing_tag_is_named_with_its_file(tmp_path: Path) -> None:
    written = make(tmp_path)
    _edit_one(written.files[4], lambda ds: delattr(ds, "PixelSpacing"))
    refused(written.series.parent,
            rf"{re.escape(str(written.files[4]))}: series [0-9.]+: tag PixelSpacing "
            r"\(0028,0030\): missing")  # fmt: skip


def test_a_non_numeric_tag_is_named(tmp_path: Path) -> None:
    written = make(tmp_path)

    def garble(ds: Any) -> None:  # raw bytes: pydicom would refuse to set the value
        value = b"1\\abc\\2 "
        ds[0x00200032] = pydicom.dataelem.RawDataElement(
            pydicom.tag.Tag(0x00200032), "DS", len(value), value, 0, False, True
        )

    _edit_one(written.files[2], garble)
    refused(written.series.parent, re.escape(written.files[2].name),
            r"tag ImagePositionPatient \(0020,0032\): not numbers")  # fmt: skip


def test_contradictory_orientations_are_refused(tmp_path: Path) -> None:
    written = make(tmp_path)
    _edit_one(written.files[5], lambda ds: setattr(ds, "ImageOrientationPatient",
                                                   [0, 1, 0, 1, 0, 0]))  # fmt: skip
    refused(written.series.parent, r"tag ImageOrientationPatient \(0020,0037\)",
            "contradictory orientations", written.files[5].name)  # fmt: skip


def test_non_orthogonal_cosines_are_refused(tmp_path: Path) -> None:
    written = make(tmp_path, edit=lambda k, ds: setattr(ds, "ImageOrientationPatient",
                                                         [1, 0, 0, 0.5, 1, 0]))  # fmt: skip
    refused(written.series.parent, "ImageOrientationPatient", "orthogonal unit vectors")


def test_mixed_sizes_within_a_series_are_refused(tmp_path: Path) -> None:
    written = make(tmp_path)

    def shrink(ds: Any) -> None:
        ds.Rows, ds.Columns = 20, 24
        ds.PixelData = np.zeros((20, 24), np.uint16).tobytes()

    _edit_one(written.files[7], shrink)
    refused(written.series.parent, r"tag Rows \(0028,0010\): mixed sizes",
            written.files[7].name, r"\[20, 24\]")  # fmt: skip


def test_two_slices_at_one_position_are_refused(tmp_path: Path) -> None:
    written = make(tmp_path)

    def copy(ds: Any) -> None:
        ds.SOPInstanceUID = pydicom.uid.generate_uid()

    twin = written.series / "copy.dcm"
    twin.write_bytes(written.files[6].read_bytes())
    _edit_one(twin, copy)
    refused(written.series.parent, "ImagePositionPatient", "at one position", "copy.dcm")


def test_a_single_slice_is_not_a_volume(tmp_path: Path) -> None:
    written = make(tmp_path)
    for path in written.files[1:]:
        path.unlink()
    refused(written.series.parent, "1 slice", "at least 2")


def test_undecodable_compression_names_the_syntax_and_packages(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")

    def compress(ds: Any) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
        ds["PixelData"].VR = "OB"

    written = make(tmp_path)
    _edit_one(written.files[0], compress)
    refused(written.series.parent, re.escape(written.files[0].name),
            r"tag TransferSyntaxUID \(0002,0010\): 1\.2\.840\.10008\.1\.2\.4\.70",
            "JPEG Lossless", "pylibjpeg", "gdcm")  # fmt: skip


def test_multi_frame_and_colour_files_are_refused(tmp_path: Path) -> None:
    written = make(tmp_path)
    _edit_one(written.files[3], lambda ds: setattr(ds, "SamplesPerPixel", 3))
    refused(written.series.parent, r"tag SamplesPerPixel \(0028,0002\): colour")
    _edit_one(written.files[3], lambda ds: setattr(ds, "NumberOfFrames", 4))
    with pytest.raises(DataError, match=r"tag NumberOfFrames \(0028,0008\): multi-frame"):
        DicomImporter().discover(written.series.parent)


def test_a_truncated_file_is_refused_before_the_volume_is_allocated(
    tmp_path: Path, monkeypatch
) -> None:
    written = make(tmp_path)
    _edit_one(written.files[8], lambda ds: setattr(ds, "Rows", 4000))
    refused(written.series.parent, "mixed sizes")

    def enlarge(ds: Any) -> None:
        ds.Rows = ds.Columns = 4000

    for path in written.files:
        _edit_one(path, enlarge)
    allocated, empty = [], np.empty  # np.empty of 1.5 GB succeeds on Linux: watch it instead

    def watched(shape: Any, *args: Any, **kwargs: Any) -> Any:
        allocated.append(int(np.prod(shape)))
        return empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", watched)
    refused(written.series.parent, r"tag PixelData \(7FE0,0010\)", "truncated")
    assert not [n for n in allocated if n >= 4000 * 4000], allocated


def test_a_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    written = make(tmp_path)
    mask = written.series.parent / f"{written.case.name}_label.nii.gz"
    image = nib.load(mask)
    shifted = image.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), mask)
    refused(written.series.parent, re.escape(str(mask)), "field sform/qform",
            "is not that of", str(written.series))  # fmt: skip


def test_a_series_without_a_label_is_named_unless_labels_are_optional(tmp_path: Path) -> None:
    written = make(tmp_path)
    (written.series.parent / f"{written.case.name}_label.nii.gz").unlink()
    with pytest.raises(DataError, match=r"no label: expected .*_label\.nii\.gz or a DICOM-SEG"):
        DicomImporter().discover(written.series.parent)
    assert load_one(written.series.parent, require_labels=False).label is None


def test_without_pydicom_the_error_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    written = make(tmp_path)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
    with pytest.raises(DataError, match=re.escape('pip install "duoseg[dicom]"')):
        DicomImporter().discover(written.series.parent)


def test_plugins_are_listed_without_the_extra() -> None:
    """The importer module imports pydicom lazily: without it, duoseg lists it all the same."""
    code = ("import sys; sys.modules['pydicom'] = sys.modules['highdicom'] = None; "
            "from duoseg.core import load_plugins; "
            "assert 'dicom' in load_plugins().names('importer')")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_file_that_cannot_be_opened_is_refused_not_skipped(tmp_path: Path, monkeypatch) -> None:
    from duoseg.core.data import dicom as finding

    written = make(tmp_path)
    victim = written.files[0]  # the first slice: skipped, the series would import short

    def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == victim:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(finding, "open", guarded, raising=False)
    refused(written.series.parent, rf"^{re.escape(str(victim))}: cannot read the file: Permission")


def test_a_linked_file_or_folder_is_refused(tmp_path: Path) -> None:
    written = make(tmp_path)
    last = written.files[-1]
    moved = tmp_path / "elsewhere.dcm"
    last.rename(moved)
    last.symlink_to(moved)
    refused(written.series.parent, rf"^{re.escape(str(last))}: a symbolic link; DICOM folders")
    last.unlink()
    moved.rename(last)
    (written.series.parent / "more").symlink_to(written.series)
    refused(written.series.parent, r"more: a symbolic link")


def test_a_folder_of_linked_nifti_files_is_no_dicom_folder(tmp_path: Path) -> None:
    """Probing for DICOM passes links over (predict asks every importer): a folder of
    linked NIfTI images, as examples/mmwhs/run.sh makes, is the nifti importer's."""
    image = tmp_path / "ct_1_image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), image)
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / image.name).symlink_to(image)
    assert DicomImporter(labels=MMWHS_LABELS, require_labels=False).images(folder, None) == []


def test_a_localizer_series_is_left_out_and_logged(tmp_path: Path, caplog) -> None:
    written = make(tmp_path)
    scout = np.zeros((48, 40, 3), np.int16)  # three images, as a scout series has

    def localizer(k: int, ds: Any) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    write_series(written.series.parent / "scout", scout, np.diag([1.0, 1.0, 50.0, 1.0]),
                 series_number=1, prefix="scout_", edit=localizer)  # fmt: skip
    with caplog.at_level("WARNING"):
        pairs = DicomImporter().discover(written.series.parent)
    assert [(p.case_id, len(p.files)) for p in pairs] == [(written.case.name, 24)]
    assert re.search(r"scout: series [0-9.]+ is a localizer \(ImageType LOCALIZER\); left out",
                     caplog.text)  # fmt: skip


def _two_series(tmp_path: Path) -> tuple[Written, Written]:
    """Two series under one source; the second one has a single slice (refused)."""
    good = make(tmp_path)
    bad = write_pair(tmp_path / "dicom", tmp_path / "nifti2", number=1)
    for path in bad.files[1:]:
        path.unlink()
    return good, bad


def test_only_the_series_asked_for_are_validated(tmp_path: Path) -> None:
    good, bad = _two_series(tmp_path)
    importer = DicomImporter()
    (pair,) = importer.discover_cases(tmp_path / "dicom", [good.case.name])
    assert pair.case_id == good.case.name and len(pair.files) == 24
    with pytest.raises(DataError, match=rf"{re.escape(str(bad.series))}: series .*1 slice"):
        importer.discover(tmp_path / "dicom")
    with pytest.raises(DataError, match=r"no case \['nope'\]; its cases: \['ct_"):
        importer.discover_cases(tmp_path / "dicom", ["nope"])


def test_the_refusals_of_every_series_asked_for_come_together(tmp_path: Path) -> None:
    good, bad = _two_series(tmp_path)
    for path in good.files[1:]:
        path.unlink()
    with pytest.raises(DataError) as info:
        DicomImporter().discover(tmp_path / "dicom")
    lines = str(info.value).splitlines()
    assert [line.split(": series")[0] for line in lines] == [str(good.series), str(bad.series)]


def test_labels_are_not_looked_up_when_not_read(tmp_path: Path) -> None:
    """Two labels for one series refuse cache build, not predict (which reads none)."""
    written = make(tmp_path)
    mask = written.series.parent / f"{written.case.name}_label.nii.gz"
    mask.with_name(f"{written.case.name}_label.nii").write_bytes(b"")
    with pytest.raises(DataError, match="more than one label"):
        DicomImporter().discover(written.series.parent)
    (pair,) = DicomImporter(require_labels=False).discover_cases(written.series.parent, None,
                                                                 labels=False)  # fmt: skip
    assert pair.label is None


def test_a_case_id_from_folder_names_follows_the_case_id_rule(tmp_path: Path) -> None:
    """Folder names make case ids; one longer than any case id may be is refused."""
    deep = tmp_path / "dicom" / ("a" * 100) / ("b" * 100)
    write_pair(deep, tmp_path / "nifti")
    with pytest.raises(DataError, match=r"case id 'a{100}_b{100}_ct_.*' is not a safe name"):
        DicomImporter().discover(tmp_path / "dicom")


def test_a_file_gone_before_its_size_is_checked_is_named(tmp_path: Path, monkeypatch) -> None:
    written = make(tmp_path)
    importer = DicomImporter()
    (pair,) = importer.discover(written.series.parent)
    victim, real = pair.files[2], Path.stat

    def stat(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == victim:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real(self, *args, **kwargs)

    from duoseg.plugins import dicom as plugin

    headers = [plugin.read_dataset(p, pixels=False) for p in pair.files]
    geometry = plugin.series_geometry(headers, list(pair.files), pair.image, "1.2")
    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DataError, match=rf"^{re.escape(str(victim))}: series 1\.2: cannot read"):
        plugin._check_file_sizes(headers, list(pair.files), "1.2", geometry)
