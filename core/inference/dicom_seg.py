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
from duoseg.core.data.orientation import to_source
from duoseg.core.errors import PredictError
from duoseg.core.fs import write_atomically
from duoseg.core.inference.outputs import ScratchLabels, largest_components
from duoseg.core.inference.streaming import LabelSink
from duoseg.core.interfaces.store import CaseMeta, check_case_id
from numpy.typing import NDArray

INSTALL = 'pip install "duoseg[dicom]"'
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


def _libraries() -> tuple[Any, Any]:
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise PredictError(f"--format dicom-seg needs pydicom and highdicom: {INSTALL}") from None
    return pydicom, highdicom


class DicomSegSink(LabelSink):
    """``OUTPUT/<case>_seg.dcm`` for each case of ``series`` (case id -> the files of its
    source series in slice order, as the ``dicom`` importer found them).

    Slabs go to an uncompressed scratch file (one byte per voxel) as for NIfTI output,
    but highdicom builds a segmentation from the whole mask: :meth:`end` holds the case's
    labels in memory, in the source's slice order, while it writes (with highdicom's
    frames about 3 bytes per voxel beyond 0.12 GiB: 0.28 GiB traced at 512 x 512 x 256)."""

    def __init__(self, path: Path, series: Mapping[str, Sequence[Path]]) -> None:
        self.path = path
        self.series = series
        self.labels: ScratchLabels | None = None

    def file(self, case_id: str) -> Path:
        return self.path / f"{check_case_id(case_id, self.path)}_seg.dcm"

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        if probabilities:
            raise PredictError(f"{self.path}: --probabilities needs a Zarr OUTPUT (a .zarr path)")
        if meta.case_id not in self.series:
            raise PredictError(f"{self.path}: case {meta.case_id} has no source DICOM series")
        if self.file(meta.case_id).exists():  # written by an interrupted run: resume after it
            self.labels = None
            return meta.shape[0]
        target = self.file(meta.case_id)
        self.labels = ScratchLabels(target.with_name(f".{target.name}.labels.partial"), meta.shape)
        return 0

    def write(
        self, z: int, labels: NDArray[np.uint8], probabilities: NDArray[np.float16] | None
    ) -> None:
        assert self.labels is not None
        self.labels[(slice(z, z + len(labels)),)] = labels

    def end(self, meta: CaseMeta, lcc_box: tuple[slice, ...] | None) -> None:
        if self.labels is None:
            return
        scratch, self.labels = self.labels, None
        try:
            labels = scratch[(slice(None),)]
        finally:
            scratch.path.unlink(missing_ok=True)
        if lcc_box is not None:
            labels[lcc_box] = largest_components(labels[lcc_box], len(meta.class_names))
        # (column, row, slice) in the source's order, to (slice, row, column) frames.
        frames = to_source(labels, np.asarray(meta.source_affine)).transpose(2, 1, 0)
        segmentation = self._segmentation(meta, frames)
        write_atomically(self.file(meta.case_id), segmentation.save_as)

    def _segmentation(self, meta: CaseMeta, frames: NDArray[np.uint8]) -> Any:
        pydicom, highdicom = _libraries()
        files = self.series[meta.case_id]
        try:
            sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
        except Exception as exc:  # pydicom raises many types for damaged files
            raise PredictError(f"case {meta.case_id}: cannot reread its source: {exc}") from exc
        if frames.shape != (len(sources), sources[0].Rows, sources[0].Columns):
            raise PredictError(
                f"case {meta.case_id}: labels of shape {frames.shape} do not fit its source "
                f"series ({len(files)} files of {sources[0].Rows} x {sources[0].Columns}, "
                f"{files[0].parent}): did the files change since they were read?"
            )
        version = importlib.metadata.version("duoseg")
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
