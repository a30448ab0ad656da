"""The built-in output formats of ``duoseg predict`` (``writer`` plugins).

* ``nifti``: one label file per case in the source's grid, in a folder, or the one file
  OUTPUT names (``*.nii``/``*.nii.gz``); the format of an OUTPUT without a suffix;
* ``zarr``: an OME-Zarr group (``*.zarr``), labels and optionally probabilities,
  written slab by slab and resumable;
* ``dicom-seg``: one DICOM-SEG per case, referencing the DICOM series it segments.
"""

from __future__ import annotations

from pathlib import Path

from duoseg.core import Component, hookimpl
from duoseg.core.inference.outputs import NiftiSink, ZarrSink
from duoseg.core.interfaces.writer import FolderSink, LabelSink, Series, Writer

NIFTI = (".nii.gz", ".nii")


def _plain_folder(output: Path) -> bool:
    return not output.name.endswith((*NIFTI, ".zarr"))


class NiftiWriter(Writer):
    output_help = "a folder or one .nii/.nii.gz file"

    def fits(self, output: Path) -> bool:
        return output.suffix != ".zarr"

    def implied_by(self, output: Path) -> bool:
        return output.suffix == "" or output.name.endswith(NIFTI)

    def is_file(self, output: Path) -> bool:
        return output.name.endswith(NIFTI)

    def sink(self, output: Path, series: Series) -> FolderSink:
        return NiftiSink(output)

    def file_sink(self, output: Path) -> LabelSink:
        return NiftiSink(output, single_file=True)


class ZarrWriter(Writer):
    output_help = "*.zarr"
    example_output = "labels.zarr"
    probabilities = True

    def fits(self, output: Path) -> bool:
        return output.suffix == ".zarr"

    def implied_by(self, output: Path) -> bool:
        return self.fits(output)

    def sink(self, output: Path, series: Series) -> FolderSink:
        return ZarrSink(output)


class DicomSegWriter(Writer):
    output_help = "a folder, for DICOM INPUT"
    needs_series = True

    def fits(self, output: Path) -> bool:
        return _plain_folder(output)

    def sink(self, output: Path, series: Series) -> FolderSink:
        from duoseg.core.inference.dicom_seg import DicomSegSink  # highdicom loads only here

        return DicomSegSink(output, series)


@hookimpl
def duoseg_writer() -> list[Component]:
    return [
        Component("nifti", NiftiWriter, "NIfTI labels in the source's grid (folder or file)"),
        Component("zarr", ZarrWriter, "OME-Zarr labels (and probabilities), resumable"),
        Component("dicom-seg", DicomSegWriter, "DICOM-SEG per case, for DICOM series input"),
    ]
