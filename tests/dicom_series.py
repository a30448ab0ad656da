"""Synthetic DICOM series for the DICOM tests: a phantom case written slice by slice with
pydicom, in any orientation, next to the NIfTI file that holds the same voxels and grid."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from duoseg.phantoms import PhantomCase, make_case
from numpy.typing import NDArray

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> DICOM's LPS patient coordinates
SIZE = (48, 40, 24)
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_UID = "1.2.826.0.1.3680043.8.498.2"


@dataclass(frozen=True)
class Orientation:
    """How a volume is stored: a rotation of the RAS axes, per-axis flips of the voxel
    order, the slice order of the files' InstanceNumbers and shuffled file names."""

    name: str
    flips: tuple[bool, bool, bool] = (True, True, False)  # (i, j, k): True = reversed
    degrees: float = 0.0  # rotation about the (1, 1, 1) axis: an oblique volume
    reverse_instances: bool = False
    shuffle_names: bool = False


ORIENTATIONS = [
    Orientation("axial_lps"),  # as scanners store axial CT: rows run to patient left
    Orientation("axial_ras", flips=(False, False, False)),
    Orientation("axial_feet_first", flips=(True, True, True)),
    Orientation("oblique", degrees=17.0),
    Orientation("reversed_instances", reverse_instances=True),
    Orientation("shuffled_names", shuffle_names=True, reverse_instances=True),
]


def grid(case: PhantomCase, orientation: Orientation) -> tuple[NDArray[np.float64], NDArray[Any]]:
    """The NIfTI-style affine (voxel (i, j, k) -> RAS mm) of the case stored in
    ``orientation``, and which voxel axes are reversed; the phantom's (z, y, x) arrays
    are RAS+."""
    sz, sy, sx = case.spacing
    nz, ny, nx = case.image.shape
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-sx * (nx - 1) / 2, -sy * (ny - 1) / 2, -sz * (nz - 1) / 2]
    for axis, (flip, n) in enumerate(zip(orientation.flips, (nx, ny, nz), strict=True)):
        if flip:  # voxel index n-1-i: the axis' column negates and the origin moves to its end
            affine[:3, 3] += affine[:3, axis] * (n - 1)
            affine[:3, axis] *= -1
    u = np.ones(3) / np.sqrt(3)  # Rodrigues' rotation about u
    angle = np.radians(orientation.degrees)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rotation = np.eye(4)
    rotation[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return np.asarray(rotation @ affine), np.array(orientation.flips)


def oriented(data_zyx: NDArray[Any], flips: NDArray[Any]) -> NDArray[Any]:
    """The (z, y, x) array in (i, j, k) voxel order with the given flips."""
    data = data_zyx.transpose(2, 1, 0)
    for axis in np.flatnonzero(flips):
        data = np.flip(data, axis=int(axis))
    return np.ascontiguousarray(data)


@dataclass(frozen=True)
class Written:
    case: PhantomCase
    series: Path  # the folder of the series' files, with <name>_label.nii.gz beside it
    files: list[Path]  # in slice order
    nifti_image: Path  # the same voxels and grid as NIfTI
    nifti_label: Path
    affine: NDArray[np.float64]  # what the NIfTI files store (float32-rounded)


def write_pair(
    dicom: Path,
    nifti: Path,
    orientation: Orientation = ORIENTATIONS[0],
    *,
    number: int = 0,
    size: tuple[int, int, int] = SIZE,
    **options: Any,
) -> Written:
    """Phantom case ``number`` as the series ``dicom/<name>/`` with its mask
    ``dicom/<name>_label.nii.gz``, and as ``nifti/<name>_{image,label}.nii.gz``: the same
    voxels and grid. ``options`` go to :func:`write_series`."""
    case = make_case(0, number, "ct", size)
    affine, flips = grid(case, orientation)
    nifti.mkdir(parents=True, exist_ok=True)
    dicom.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, data in (("image", case.image), ("label", case.label)):
        image = nib.Nifti1Image(oriented(data, flips), affine)
        image.header.set_xyzt_units("mm")
        paths.append(nifti / f"{case.name}_{suffix}.nii.gz")
        nib.save(image, paths[-1])
    shutil.copy(paths[1], dicom / f"{case.name}_label.nii.gz")
    stored = np.asarray(nib.load(paths[0]).affine, dtype=np.float64)
    series = dicom / case.name
    files = write_series(series, oriented(case.image, flips), stored, orientation=orientation,
                         **options)  # fmt: skip
    return Written(case, series, files, paths[0], paths[1], stored)


def write_series(
    folder: Path,
    data_ijk: NDArray[Any],
    affine: NDArray[np.float64],
    *,
    orientation: Orientation = ORIENTATIONS[0],
    series_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    series_number: int = 3,
    prefix: str = "slice_",
    edit: Callable[[int, Any], None] | None = None,
) -> list[Path]:
    """Write ``data_ijk`` (i = column, j = row, k = slice) with the NIfTI-style ``affine``
    as single-frame CT files, returned in slice order; ``edit(k, dataset)`` may change
    slice k before it is saved. Stored values are (data - intercept) / slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    def ds(values: Sequence[float]) -> list[str]:
        return [format_number_as_ds(float(v)) for v in values]

    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    cosines = lps[:3, :3] / spacing
    stored = np.round((data_ijk - intercept) / slope)
    signed = stored.min() < 0
    series_uid = series_uid or generate_uid()
    n = data_ijk.shape[2]
    names = [f"{prefix}{k:04d}.dcm" for k in range(n)]
    if orientation.shuffle_names:
        random.Random(n).shuffle(names)
    files = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = CTImageStorage
        item = Dataset()
        item.file_meta = meta
        item.SOPClassUID = CTImageStorage
        item.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
        item.StudyInstanceUID, item.SeriesInstanceUID = STUDY_UID, series_uid
        item.FrameOfReferenceUID = FRAME_UID
        item.Modality, item.PatientName, item.PatientID = "CT", "Phantom^Heart", "phantom-1"
        item.PatientBirthDate, item.PatientSex, item.StudyID = "", "O", "1"
        item.StudyDate, item.StudyTime, item.AccessionNumber = "20240101", "120000", ""
        item.ReferringPhysicianName, item.Manufacturer = "", "duoseg tests"
        item.SeriesNumber = series_number
        item.InstanceNumber = n - k if orientation.reverse_instances else k + 1
        item.ImageOrientationPatient = ds([*cosines[:, 0], *cosines[:, 1]])
        item.ImagePositionPatient = ds((lps @ [0, 0, k, 1])[:3])
        item.PixelSpacing = ds([spacing[1], spacing[0]])  # between rows, between columns
        item.SliceThickness = format_number_as_ds(float(spacing[2]))
        item.Rows, item.Columns = data_ijk.shape[1], data_ijk.shape[0]
        item.SamplesPerPixel, item.PhotometricInterpretation = 1, "MONOCHROME2"
        item.BitsAllocated, item.BitsStored, item.HighBit = 16, 16, 15
        item.PixelRepresentation = 1 if signed else 0
        item.RescaleSlope, item.RescaleIntercept = ds([slope, intercept])
        dtype = np.int16 if signed else np.uint16
        item.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(dtype)).tobytes()
        if edit is not None:
            edit(k, item)
        files.append(folder / names[k])
        item.save_as(files[-1], enforce_file_format=True)
    return files
