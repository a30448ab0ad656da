"""NIfTI importers: ``mmwhs`` (the MM-WHS challenge's files) and ``nifti`` (any label map).

Both find ``<case>_image.nii[.gz]`` / ``<case>_label.nii[.gz]`` pairs, read them with
nibabel, validate them, and reorient them to duoseg's canonical RAS+ (z, y, x).
Every refusal names the file and the header field or value at fault, and happens
before anything is written to a cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from duoseg.core import Component, hookimpl
from duoseg.core.data.orientation import canonical_case, check_volume
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import (
    ImportedCase,
    Importer,
    SourcePair,
    integer_labels,
    pick,
)
from nibabel.openers import ImageOpener
from numpy.typing import NDArray

MAX_VOXELS = 2**31  # 8 GiB as float32: far beyond any cardiac CT, short of exhausting memory

MMWHS_LABELS: dict[str, int] = {
    "Myo": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850,
}  # fmt: skip
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class NiftiPairImporter(Importer):
    """Image/label NIfTI pairs with a label map ``{class name: value in the files}``.

    Class indices follow the map's order after background (0). ``mapping`` sends
    other values found in label files to mapped values (``{"421": 420}``), or to 0.
    ``require_labels=False`` accepts images without a label file (for inference).
    """

    def __init__(
        self,
        labels: Mapping[str, int],
        *,
        mapping: Mapping[str, int] | None = None,
        image_suffix: str = "_image",
        label_suffix: str = "_label",
        require_labels: bool = True,
    ) -> None:
        if not labels:
            raise DataError("importer needs a label map {class name: value}; got an empty one")
        values = list(labels.values())
        if 0 in values or len(set(values)) != len(values):
            raise DataError(f"label map values must be distinct and non-zero, got {dict(labels)}")
        self.class_names = ("background", *labels)
        self.label_values = (0, *values)
        self.mapping = {self._mapping_key(k): int(v) for k, v in (mapping or {}).items()}
        unmapped = [v for v in self.mapping.values() if v not in self.label_values]
        if unmapped:
            raise DataError(f"mapping sends values to {unmapped}, which the label map lacks")
        self.image_suffix = image_suffix
        self.label_suffix = label_suffix
        self.require_labels = require_labels

    @staticmethod
    def _mapping_key(key: str | int) -> int:
        try:
            return int(key)
        except ValueError:
            raise DataError(f"mapping keys must be integer label values, got {key!r}") from None

    def discover(self, source: Path) -> list[SourcePair]:
        source = Path(source)
        if not source.is_dir():
            raise DataError(f"{source}: source folder not found")
        images = {
            self._case_id(p, self.image_suffix): p
            for p in self._nifti_files(source, self.image_suffix)
        }
        labels = {
            self._case_id(p, self.label_suffix): p
            for p in self._nifti_files(source, self.label_suffix)
        }
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DataError(
                f"{labels[orphans[0]]}: label file without its partner "
                f"{orphans[0]}{self.image_suffix}.nii.gz"
            )
        missing = sorted(set(images) - set(labels))
        if missing and self.require_labels:
            raise DataError(
                f"{images[missing[0]]}: image file without its partner "
                f"{missing[0]}{self.label_suffix}.nii.gz"
            )
        if not images:
            raise DataError(f"{source}: no *{self.image_suffix}.nii[.gz] files found")
        return [SourcePair(case, images[case], labels.get(case)) for case in sorted(images)]

    def images(self, source: Path, cases: Sequence[str] | None) -> list[SourcePair]:
        """One NIfTI file, or every NIfTI file in a folder but label files; the case id
        is the name without ``_image`` and the NIfTI suffix."""
        if source.is_file() and source.name.endswith(NIFTI_SUFFIXES):
            files = [source]
        elif source.is_dir():
            files = sorted(
                p
                for p in source.iterdir()
                if p.name.endswith(NIFTI_SUFFIXES) and f"{self.label_suffix}." not in p.name
            )
        else:
            return []
        found = {
            self._image_id(path): SourcePair(self._image_id(path), path, None) for path in files
        }
        return pick(found, cases, source) if found else []

    def _image_id(self, path: Path) -> str:
        for suffix in NIFTI_SUFFIXES:
            for ending in (f"{self.image_suffix}{suffix}", suffix):
                if path.name.endswith(ending):
                    return path.name[: -len(ending)]
        raise DataError(f"{path}: not a NIfTI file (.nii or .nii.gz)")

    @staticmethod
    def _nifti_files(source: Path, suffix: str) -> list[Path]:
        return sorted(
            p for ext in NIFTI_SUFFIXES for p in source.glob(f"*{suffix}{ext}") if p.is_file()
        )

    @staticmethod
    def _case_id(path: Path, suffix: str) -> str:
        name = path.name
        for ext in NIFTI_SUFFIXES:
            if name.endswith(suffix + ext):
                return name[: -len(suffix + ext)]
        raise DataError(f"{path}: not a *{suffix}.nii[.gz] file")

    def load(self, pair: SourcePair) -> ImportedCase:
        image = read_nifti(pair.image)
        data = read_voxels(pair.image, lambda: image.get_fdata(dtype=np.float32))
        label = None
        if pair.label is not None:
            label_image = read_nifti(pair.label)
            check_same_grid(pair.image, image, pair.label, label_image)
            label = self.class_indices(pair.label, label_image)
        sx, sy, sz = (float(z) for z in image.header.get_zooms()[:3])
        affine = np.asarray(image.affine, dtype=np.float64)
        return canonical_case(pair.case_id, data, affine, (sx, sy, sz), where=pair.image,
                              classes=(self.class_names, self.label_values),
                              label_xyz=label)  # fmt: skip

    def class_indices(self, path: Path, image: Any) -> NDArray[np.uint8]:
        """A label image's values as class indices, in the file's voxel order; values
        outside the label map (after ``mapping``) are refused naming the file."""
        values = integer_labels(read_voxels(path, lambda: image.dataobj), path)
        for source_value, target in self.mapping.items():
            values[values == source_value] = target
        found = np.unique(values)
        unknown = sorted(set(found.tolist()) - set(self.label_values))
        if unknown:
            raise DataError(
                f"{path}: field data: label values {unknown[:10]} are not in the label map "
                f"{dict(zip(self.class_names, self.label_values, strict=True))}; "
                f"values found: {found.tolist()[:20]} (give a mapping to accept them)"
            )
        lookup = np.zeros(max(self.label_values) + 1, np.uint8)
        lookup[list(self.label_values)] = np.arange(len(self.label_values), dtype=np.uint8)
        return lookup[values]


class MMWHSImporter(NiftiPairImporter):
    """The MM-WHS challenge files: values 205 Myo, 420 LA, 500 LV, 550 RA, 600 RV, 820 AA, 850 PA.

    Class indices 1..7 follow that (ascending value) order. Any other value in a
    label file is an error naming the file and the values, unless ``mapping`` says
    where it goes.
    """

    def __init__(
        self, *, mapping: Mapping[str, int] | None = None, require_labels: bool = True
    ) -> None:
        super().__init__(MMWHS_LABELS, mapping=mapping, require_labels=require_labels)


def read_nifti(path: Path) -> Any:
    """Load a NIfTI header and check what duoseg relies on; the data stay on disk."""
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: field header: not a readable NIfTI file: {exc}") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"{path}: field header: not a NIfTI image ({type(image).__name__})")
    shape = tuple(int(n) for n in image.shape)
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        image = nib.funcs.squeeze_image(image)
        shape = shape[:3]
    check_volume(path, shape, _raw_pixdim(path, image), np.asarray(image.affine, np.float64))
    _check_size(path, image, shape)
    return image


def _check_size(path: Path, image: Any, shape: tuple[int, ...]) -> None:
    """Refuse volumes too big to hold and (uncompressed) files shorter than their header
    says, before any voxel is read or any buffer allocated."""
    voxels = int(np.prod(shape, dtype=np.float64))
    if voxels > MAX_VOXELS:
        raise DataError(
            f"{path}: field dim: shape {shape} is {voxels} voxels; at most {MAX_VOXELS} are read"
        )
    if path.name.endswith(".gz"):
        return  # gzip sizes are only known by decompressing; a short stream fails the read
    needed = int(image.header["vox_offset"]) + voxels * image.get_data_dtype().itemsize
    size = path.stat().st_size
    if size < needed:
        raise DataError(
            f"{path}: field dim/datatype: the header describes {needed} bytes of voxels and "
            f"header, the file holds {size} (truncated?)"
        )


def read_voxels(path: Path, read: Callable[[], Any]) -> NDArray[Any]:
    """The voxels, or duoseg's error naming the file: nibabel raises many types for data
    it cannot decode (short gzip streams, unusual datatypes)."""
    try:
        return np.asanyarray(read())
    except MemoryError:
        raise DataError(f"{path}: field data: the voxels do not fit in memory") from None
    except Exception as exc:
        raise DataError(f"{path}: field data: cannot read the voxels: {exc}") from exc


def _raw_pixdim(path: Path, image: Any) -> NDArray[np.float64]:
    """pixdim[1:4] as stored: nibabel's loader silently replaces negatives by their abs."""
    try:
        with ImageOpener(path) as handle:
            raw = type(image.header).from_fileobj(handle, check=False)
    except Exception as exc:
        raise DataError(f"{path}: field pixdim: cannot read the header: {exc}") from exc
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def check_same_grid(image_path: Path, image: Any, label_path: Path, label: Any) -> None:
    if image.shape != label.shape:
        raise DataError(
            f"{label_path}: field dim: label shape {tuple(label.shape)} differs from image "
            f"{image_path.name} shape {tuple(image.shape)}"
        )
    if not np.allclose(image.affine, label.affine, rtol=1e-4, atol=1e-3):
        raise DataError(
            f"{label_path}: field sform/qform: label affine {np.round(label.affine, 4).tolist()} "
            f"differs from image {image_path.name} affine {np.round(image.affine, 4).tolist()}"
        )


@hookimpl
def duoseg_importer() -> list[Component]:
    return [
        Component("mmwhs", MMWHSImporter, "MM-WHS NIfTI pairs (values 205..850)"),
        Component("nifti", NiftiPairImporter, "NIfTI image/label pairs with a label map"),
    ]
