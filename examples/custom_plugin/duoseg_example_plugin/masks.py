"""A writer of its own: one binary NIfTI mask per structure, a folder per case.

``duoseg predict MODEL INPUT OUT --format class-masks`` writes ``OUT/<case>/<class>.nii.gz``
(uint8, 1 inside the structure) in the source file's grid and orientation, as tools that
take one mask per structure (radiotherapy contouring, mesh generation) want them. The
engine's scratch sink collects the slabs; this class writes only the files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from duoseg.core import CaseMeta, FolderSink, Writer
from duoseg.core.inference.outputs import ScratchLabels, ScratchSink, source_labels
from duoseg.core.interfaces.writer import Series
from duoseg.core.records.case import check_case_id


class ClassMasksSink(ScratchSink):
    """``OUTPUT/<case>/`` holds one mask per class; the folder appears, renamed into
    place, only once every mask is written (so a killed run leaves no half case)."""

    def file(self, case_id: str) -> Path:
        return self.path / check_case_id(case_id, self.path)

    def _save(self, meta: CaseMeta, labels: ScratchLabels, target: Path) -> None:
        values = source_labels(labels, meta)  # source label values, source grid
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            for name, value in zip(meta.class_names[1:], meta.label_values[1:], strict=True):
                mask = nib.Nifti1Image((values == value).astype(np.uint8), meta.source_affine)
                nib.save(mask, partial / f"{name}.nii.gz")
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


class ClassMasks(Writer):
    output_help = "a folder of one folder per case"
    example_output = "masks"

    def fits(self, output: Path) -> bool:
        return output.suffix == ""  # a folder; a name with a suffix is another format's

    def sink(self, output: Path, series: Series) -> FolderSink:
        return ClassMasksSink(output)
