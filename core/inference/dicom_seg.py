"""DICOM-SEG output (``duoseg predict ... --format dicom-seg``): one Segmentation per
predicted series, ``OUTPUT/<case>_seg.dcm``, referencing the series it segments.

Written with highdicom (``pip install "duoseg[dicom]"``) as a BINARY segmentation, the
kind every DICOM-SEG reader (3D Slicer, OHIF, dcmqi) opens, with one segment per class:
its label is the class name, its coded type SNOMED CT's concept for the MM-WHS cardiac
structures (``CARDIAC``, from pydicom's ``codes.SCT``) and SNOMED CT's "Anatomical
Structure" for any other class. Patient, study and frame of reference come from the
source files, through highdicom.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from duoseg.core.data.dicom import library, read_dataset
from duoseg.core.data.orientation import to_source
from duoseg.core.errors import PredictError
from duoseg.core.fs import write_atomically
from duoseg.core.inference.outputs import ScratchLabels, ScratchSink
from duoseg.core.records.case import CaseMeta, check_case_id
from numpy.typing import NDArray

# MM-WHS class -> the SNOMED CT concept in pydicom's codes.SCT. Neither SNOMED CT's
# "cavity of left ventricle" nor the ascending aorta's finer concepts are among them, so
# LV is coded as the left ventricle and AA as the aorta; the labels keep the names.
CARDIAC = {
    "LV": "LeftVentricle",  # 87878005
    "Myo": "LeftVentricleMyocardium",  # 49848007
    "LA": "LeftAtrium",  # 82471001
    "RA": "RightAtrium",  # 73829009
    "RV": "RightVentricle",  # 53085002
    "AA": "Aorta",  # 15825003
    "PA": "PulmonaryArtery",  # 81040000
}
SERIES_NUMBER = 9001  # after the scanner's own series in a viewer's list


class DicomSegSink(ScratchSink):
    """``OUTPUT/<case>_seg.dcm`` for each case of ``series`` (case id -> the files of its
    source series in slice order, as the ``dicom`` importer found them).

    highdicom builds a segmentation from the whole mask: :meth:`_save` holds the case's
    labels in memory, in the source's slice order, while it writes (with highdicom's
    frames about 3 bytes per voxel beyond 0.12 GiB: 0.28 GiB traced at 512 x 512 x 256).
    pydicom and highdicom are imported when the sink is made, before any case is
    predicted."""

    def __init__(self, path: Path, series: Mapping[str, Sequence[Path]]) -> None:
        super().__init__(path)
        self.series = series
        self.highdicom = library("highdicom", "--format dicom-seg")
        library("pydicom", "--format dicom-seg")

    def file(self, case_id: str) -> Path:
        return self.path / f"{check_case_id(case_id, self.path)}_seg.dcm"

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        if meta.case_id not in self.series:
            raise PredictError(f"{self.path}: case {meta.case_id} has no source DICOM series")
        return super().begin(meta, probabilities)

    def _save(self, meta: CaseMeta, labels: ScratchLabels, target: Path) -> None:
        # (column, row, slice) in the source's order, to (slice, row, column) frames.
        frames = to_source(labels[(slice(None),)], np.asarray(meta.source_affine))
        segmentation = self._segmentation(meta, frames.transpose(2, 1, 0))
        write_atomically(target, segmentation.save_as)

    def _segmentation(self, meta: CaseMeta, frames: NDArray[np.uint8]) -> Any:
        files = self.series[meta.case_id]
        sources = [read_dataset(path, pixels=False) for path in files]
        _check_fits(meta.case_id, frames, sources, files)
        highdicom, version = self.highdicom, _version()
        try:
            return highdicom.seg.Segmentation(
                source_images=sources,
                pixel_array=frames,  # class indices: segment numbers 1..C
                segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments(highdicom, meta.class_names[1:], version),
                series_instance_uid=highdicom.UID(),
                series_number=SERIES_NUMBER,
                sop_instance_uid=highdicom.UID(),
                instance_number=1,
                manufacturer="duoseg",
                manufacturer_model_name="duoseg",
                software_versions=version,
                device_serial_number="none",
                series_description="duoseg segmentation",
            )
        except Exception as exc:  # highdicom checks the sources' modules as it copies them
            raise PredictError(
                f"case {meta.case_id}: highdicom cannot make a DICOM-SEG of series "
                f"{files[0].parent}: {exc}"
            ) from exc


def _check_fits(
    case_id: str, frames: NDArray[np.uint8], sources: list[Any], files: Sequence[Path]
) -> None:
    """The labels must still fit the source files, which are read a second time here."""
    for source, path in zip(sources, files, strict=True):
        try:
            size = (int(source.Rows), int(source.Columns))
        except (AttributeError, TypeError, ValueError) as exc:
            raise PredictError(
                f"{path}: case {case_id}: Rows/Columns unreadable on rereading: {exc}"
            ) from None
        if frames.shape != (len(sources), *size):
            raise PredictError(
                f"{path}: case {case_id}: labels of shape {frames.shape} do not fit its "
                f"source series ({len(files)} files, this one {size[0]} x {size[1]}): did "
                "the files change since they were read?"
            )


def _version() -> str:
    """duoseg's version, for the segmentation's provenance; 'unknown' when duoseg runs
    from a source tree that was never installed."""
    try:
        return importlib.metadata.version("duoseg")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def segments(highdicom: Any, names: Sequence[str], version: str) -> list[Any]:
    """One SegmentDescription per class (segment number = class index), coded as above."""
    from pydicom.sr.codedict import codes

    algorithm = highdicom.AlgorithmIdentificationSequence(
        name="duoseg", family=codes.cid7162.ArtificialIntelligence, version=version
    )
    return [
        highdicom.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=getattr(codes.SCT, CARDIAC.get(name, "AnatomicalStructure")),
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(names, 1)
    ]
