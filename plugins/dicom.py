"""DICOM importer ``dicom``: folders of CT/MR series in, canonical (z, y, x) cases out.

Needs the optional extra: ``pip install "duoseg[dicom]"`` (pydicom, and highdicom for
DICOM-SEG labels), imported only when a folder is read, so ``duoseg plugins`` lists the
importer without them.

- Every DICOM Part 10 file under the source folder is read (headers only, first) and
  grouped by SeriesInstanceUID, which every file but a DICOMDIR must have (so a damaged
  file is refused, never silently dropped; so are unreadable files and symbolic links).
  Series none of whose files has Rows (reports, presentation states) are not images and
  are left out, and so are localizers (ImageType LOCALIZER: scouts, logged); DICOM-SEG
  files are labels.
- A series' slices are ordered by their position along the slice normal (the cross
  product of the ImageOrientationPatient cosines), never by file name or InstanceNumber.
- The affine follows from ImageOrientationPatient, ImagePositionPatient and
  PixelSpacing: voxel (column, row, slice) to DICOM's LPS mm, then to the RAS mm that
  NIfTI affines (and ``core/data/orientation.py``) use. Intensities are the stored values
  times RescaleSlope plus RescaleIntercept (Hounsfield units for CT).
- Case ids: the series folder's path below the source, ``_``-joined (the source's own
  name for files directly in it), with ``_<SeriesNumber>`` when a folder holds several
  series. Labels: a NIfTI mask ``<folder>_label.nii[.gz]`` next to the series folder,
  or a DICOM-SEG anywhere under the source that references the series, its segments
  named after the classes of the label map (what ``duoseg predict --format dicom-seg``
  writes).
- Refused with the series, file and tag named (:class:`DataError`): a missing,
  unreadable or non-finite tag; tags that contradict each other within a series
  (orientation, pixel spacing); mixed image sizes; fewer than two slices; two slices at
  one position; slice spacing not uniform to 1%; slice positions off the slice normal
  (gantry tilt); multi-frame files; colour images; compressed transfer syntaxes no
  installed package decodes (naming the syntax and the packages that would). Only the
  series asked for are checked (all for ``cache build``, ``--case``'s for ``predict``),
  and all their refusals are raised together.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from duoseg.core import Component, hookimpl
from duoseg.core.data.dicom import (
    Dataset,
    dicom_files,
    holds_dicom,
    library,
    quiet,
    read_dataset,
)
from duoseg.core.data.orientation import (
    LPS_TO_RAS,
    canonical_affine,
    canonical_spacing,
    to_canonical,
)
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import ImportedCase, Importer, SourcePair, pick
from duoseg.core.records.case import check_case_id
from duoseg.plugins.importers import (
    MAX_VOXELS,
    MMWHS_LABELS,
    NIFTI_SUFFIXES,
    NiftiPairImporter,
    read_nifti,
)
from numpy.typing import NDArray

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage SOP class
DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage SOP class
SPACING_TOLERANCE = 0.01  # of the mean slice step: steps and drift off the normal
COSINE_TOLERANCE = 1e-3  # direction cosines are decimal strings, often of 6 digits
DUPLICATE_MM = 1e-3  # slices closer than this along the normal are one position
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
BITS = (8, 16, 32)

log = logging.getLogger(__name__)


def tag_name(keyword: str) -> str:
    """``Rows (0028,0010)``: the keyword and the tag number viewers show."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def tag_error(where: str, keyword: str, problem: str) -> DataError:
    return DataError(f"{where}: tag {tag_name(keyword)}: {problem}")


def _value(ds: Dataset, keyword: str, where: str) -> Any:
    """A tag's value, None when absent; pydicom parses values when first read."""
    try:
        with quiet():
            return ds.get(keyword)
    except Exception as exc:  # a value its VR cannot hold
        raise tag_error(where, keyword, f"unreadable value: {exc}") from exc


def _required(ds: Dataset, keyword: str, where: str) -> Any:
    value = _value(ds, keyword, where)
    if value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0):
        raise tag_error(where, keyword, "missing")
    return value


def _numbers(ds: Dataset, keyword: str, where: str, count: int) -> NDArray[np.float64]:
    value = _required(ds, keyword, where)
    items = [value] if isinstance(value, str | bytes | int | float) else list(value)
    try:
        numbers = np.array([float(item) for item in items], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise tag_error(where, keyword, f"not numbers: {value!r}") from None
    if len(numbers) != count or not np.isfinite(numbers).all():
        raise tag_error(where, keyword, f"{count} finite numbers required, got {value!r}")
    return numbers


def _number(ds: Dataset, keyword: str, where: str, default: float) -> float:
    if _value(ds, keyword, where) in (None, ""):
        return default
    return float(_numbers(ds, keyword, where, 1)[0])


def _integer(ds: Dataset, keyword: str, where: str) -> int:
    value = _required(ds, keyword, where)
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise tag_error(where, keyword, f"not an integer: {value!r}") from None
    if isinstance(value, float) and number != value:
        raise tag_error(where, keyword, f"not an integer: {value!r}")
    return number


def _text(ds: Dataset, keyword: str, where: str) -> str:
    value = _required(ds, keyword, where)
    if not isinstance(value, str) or not value.strip():
        raise tag_error(where, keyword, f"text required, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Geometry:
    """A series' voxel grid: slices in order along the normal, the NIfTI-style affine
    of voxel (column, row, slice) to RAS mm, and the shape (columns, rows, slices)."""

    order: tuple[int, ...]
    affine: NDArray[np.float64]
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]


def series_geometry(
    datasets: Sequence[Dataset], paths: Sequence[Path], folder: Path, uid: str
) -> Geometry:
    """Validate the geometry tags of series ``uid`` (in ``folder``) and order its slices."""
    where = f"{folder}: series {uid}"
    at = [f"{path}: series {uid}" for path in paths]  # where each file's tags are
    n = len(datasets)
    if n < 2:
        raise DataError(f"{where}: {n} slice ({paths[0].name}); a volume needs at least 2")
    sizes = [
        (_integer(d, "Rows", w), _integer(d, "Columns", w))
        for d, w in zip(datasets, at, strict=True)
    ]
    _agree(sizes, paths, where, "Rows", what="mixed sizes (rows, columns) in one series",
           tolerance=0)  # fmt: skip
    rows, columns = sizes[0]
    if rows < 1 or columns < 1 or rows * columns * n > MAX_VOXELS:
        raise tag_error(where, "Rows", f"{rows} rows x {columns} columns x {n} slices: "
                        f"between 1 and {MAX_VOXELS} voxels are read")  # fmt: skip
    cosines = [
        _numbers(d, "ImageOrientationPatient", w, 6) for d, w in zip(datasets, at, strict=True)
    ]
    _agree(cosines, paths, where, "ImageOrientationPatient", what="contradictory orientations",
           tolerance=COSINE_TOLERANCE)  # fmt: skip
    spacings = [_numbers(d, "PixelSpacing", w, 2) for d, w in zip(datasets, at, strict=True)]
    _agree(spacings, paths, where, "PixelSpacing", what="contradictory pixel spacings",
           tolerance=1e-4)  # fmt: skip
    if (spacings[0] <= 0).any():
        raise tag_error(at[0], "PixelSpacing", f"must be > 0, got {spacings[0].tolist()}")
    row, column, normal = _directions(cosines[0], at[0])
    positions = np.array(
        [_numbers(d, "ImagePositionPatient", w, 3) for d, w in zip(datasets, at, strict=True)]
    )
    order, step = _slice_order(positions, normal, paths, where)
    _check_on_normal(positions[list(order)], normal, step, datasets[0], where)
    lps = np.eye(4)
    # Column index i advances along the row direction, PixelSpacing[1] apart; row index j
    # along the column direction, PixelSpacing[0] apart (PixelSpacing is row\column).
    lps[:3, 0] = row * spacings[0][1]
    lps[:3, 1] = column * spacings[0][0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[order[0]]
    zooms = (float(spacings[0][1]), float(spacings[0][0]), step)
    return Geometry(order, LPS_TO_RAS @ lps, (columns, rows, n), zooms)


def _agree(values: Sequence[Any], paths: Sequence[Path], where: str, keyword: str, *,
           what: str, tolerance: float) -> None:  # fmt: skip
    """Every slice's value equals the first slice's (to ``tolerance``)."""
    first = np.asarray(values[0], dtype=np.float64)
    for value, path in zip(values, paths, strict=True):
        if np.abs(np.asarray(value, dtype=np.float64) - first).max() > tolerance:
            raise tag_error(where, keyword, f"{what}: {path.name} has {_show(value)}, "
                            f"{paths[0].name} has {_show(values[0])}")  # fmt: skip


def _show(value: Any) -> str:
    return str(np.asarray(value).tolist())


def _directions(
    cosines: NDArray[np.float64], where: str
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Unit row and column directions and the slice normal, from ImageOrientationPatient."""
    row, column = cosines[:3], cosines[3:]
    norms = np.array([np.linalg.norm(row), np.linalg.norm(column)])
    if np.abs(norms - 1).max() > COSINE_TOLERANCE or abs(row @ column) > COSINE_TOLERANCE:
        raise tag_error(where, "ImageOrientationPatient",
                        f"the row and column cosines must be orthogonal unit vectors, got "
                        f"{cosines.tolist()}")  # fmt: skip
    row, column = row / norms[0], column / norms[1]
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal)


def _slice_order(positions: NDArray[np.float64], normal: NDArray[np.float64],
                 paths: Sequence[Path], where: str) -> tuple[tuple[int, ...], float]:  # fmt: skip
    """Slices sorted by position along the normal, and the (uniform) step between them."""
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    k = int(np.argmin(steps))
    if steps[k] < DUPLICATE_MM:
        a, b = paths[order[k]].name, paths[order[k + 1]].name
        raise tag_error(where, "ImagePositionPatient", f"{a} and {b} are at one position "
                        f"{positions[order[k]].tolist()} (duplicate slices?)")  # fmt: skip
    step = float((along[order[-1]] - along[order[0]]) / (len(order) - 1))
    k = int(np.argmax(np.abs(steps - step)))
    if abs(steps[k] - step) > SPACING_TOLERANCE * step:
        a, b = paths[order[k]].name, paths[order[k + 1]].name
        raise tag_error(where, "ImagePositionPatient",
                        f"slice spacing is not uniform: steps from {steps.min():.4g} to "
                        f"{steps.max():.4g} mm, more than {SPACING_TOLERANCE:.0%} off their "
                        f"mean {step:.4g} mm; {a} -> {b} is {steps[k]:.4g} mm "
                        "(a missing slice?)")  # fmt: skip
    return tuple(int(i) for i in order), step


def _check_on_normal(positions: NDArray[np.float64], normal: NDArray[np.float64], step: float,
                     first: Dataset, where: str) -> None:  # fmt: skip
    """Ordered positions must lie on one line along the normal: a tilted gantry shifts
    each slice in-plane, which a NIfTI-style affine cannot express."""
    offsets = positions - positions[0]
    drift = offsets - np.outer(offsets @ normal, normal)
    largest = float(np.linalg.norm(drift, axis=1).max())
    if largest > SPACING_TOLERANCE * step:
        tilt = _value(first, "GantryDetectorTilt", where)
        raise tag_error(where, "ImagePositionPatient",
                        f"slice positions drift {largest:.3g} mm off the slice normal across "
                        f"the series: gantry tilt ({tag_name('GantryDetectorTilt')} = {tilt!r});"
                        " resample it to an orthogonal grid first")  # fmt: skip


def shown(text: str) -> str:
    """Text from a file as messages show it: escaped if it holds control characters."""
    return text if text.isprintable() else ascii(text)


def case_name(text: str) -> str:
    """A safe case id from folder names: letters, digits, '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-") or "series"


@dataclass
class _Series:
    uid: str
    slices: list[tuple[Path, Dataset]]

    @property
    def folder(self) -> Path:
        return Path(os.path.commonpath([p.parent for p, _ in self.slices]))


class DicomImporter(Importer):
    """DICOM series with a label map ``{class name: value}`` for their labels (default:
    the MM-WHS values). NIfTI masks hold the values (``mapping`` sends others to mapped
    values, as for the ``nifti`` importer); DICOM-SEG segments are matched to the classes
    by their SegmentLabel. ``require_labels=False`` accepts series without labels."""

    def __init__(
        self,
        labels: Mapping[str, int] = MMWHS_LABELS,
        *,
        mapping: Mapping[str, int] | None = None,
        label_suffix: str = "_label",
        require_labels: bool = True,
    ) -> None:
        self.masks = NiftiPairImporter(labels, mapping=mapping, label_suffix=label_suffix)
        self.label_suffix = label_suffix
        self.require_labels = require_labels

    def discover(self, source: Path) -> list[SourcePair]:
        return self.discover_cases(source, None)

    def images(self, source: Path, cases: Sequence[str] | None) -> list[SourcePair]:
        """The series under a folder holding DICOM files; their labels are not read."""
        if not source.is_dir() or not holds_dicom(source):
            return []
        return self.discover_cases(source, cases, labels=False)

    def discover_cases(
        self, source: Path, cases: Sequence[str] | None, *, labels: bool = True
    ) -> list[SourcePair]:
        """Only the series asked for are validated (geometry, slice order, label), so one
        unusual series in a study stops neither the others nor ``--case``; the refusals of
        those asked for are raised together, one line each."""
        source = Path(source)
        found, segmentations = self._series(source)
        pairs: list[SourcePair] = []
        refusals: list[str] = []
        for case_id, (stem, series) in zip(cases or found, pick(found, cases, source), strict=True):
            seg = segmentations.get(series.uid, [])
            try:
                label = self._label(series, stem, seg) if labels else None
                pairs.append(_pair(case_id, series, label))
            except DataError as exc:
                refusals.append(str(exc))
        if refusals:
            raise DataError("\n".join(refusals))
        return pairs

    def _series(self, source: Path) -> tuple[dict[str, tuple[str, _Series]], dict[str, list[Path]]]:
        """Every image series under ``source`` by case id (sorted), with its name in its
        folder; and the DICOM-SEG files by the series they reference."""
        if not source.is_dir():
            raise DataError(f"{source}: source folder not found")
        files = dicom_files(source)
        images, segmentations = _group(files)
        localizers = [uid for uid, series in images.items() if _is_localizer(series)]
        for uid in localizers:
            log.warning("%s: series %s is a localizer (ImageType LOCALIZER); left out",
                        images[uid].folder, shown(uid))  # fmt: skip
            del images[uid]
        if not images:
            raise DataError(f"{source}: no DICOM image series found ({len(files)} DICOM files, "
                            f"{len(localizers)} localizer series)")  # fmt: skip
        orphans = sorted(set(segmentations) - set(images) - set(localizers))
        if orphans and self.require_labels:
            problem = f"references series {shown(orphans[0])}, which is not under {source}"
            raise tag_error(str(segmentations[orphans[0]][0]), "ReferencedSeriesSequence", problem)
        stems = _stems(images)
        named = {_case_id(source, s.folder, stem): (stem, s) for stem, s in stems}
        _check_unique(named, stems, source)
        return dict(sorted(named.items())), segmentations

    def _label(self, series: _Series, stem: str, segmentations: list[Path]) -> Path | None:
        masks = [series.folder.parent / f"{stem}{self.label_suffix}{ext}" for ext in NIFTI_SUFFIXES]
        found = [p for p in masks if p.is_file()] + segmentations
        where = f"{series.folder}: series {shown(series.uid)}"
        if len(found) > 1:
            raise DataError(f"{where}: more than one label: {', '.join(map(str, found))}")
        if not found and self.require_labels:
            raise DataError(f"{where}: no label: expected {masks[0]} or a DICOM-SEG "
                            "referencing the series")  # fmt: skip
        return found[0] if found else None

    def load(self, pair: SourcePair) -> ImportedCase:
        files = list(pair.files) or dicom_files(pair.image)
        if not files:
            raise DataError(f"{pair.image}: no DICOM files found")
        headers = [read_dataset(path, pixels=False) for path in files]
        uids = {_text(d, "SeriesInstanceUID", str(p)) for d, p in zip(headers, files, strict=True)}
        if len(uids) > 1:
            raise tag_error(str(pair.image), "SeriesInstanceUID",
                            f"the files belong to {len(uids)} series: {sorted(uids)}")  # fmt: skip
        uid = shown(uids.pop())
        where = f"{pair.image}: series {uid}"
        geometry = series_geometry(headers, files, pair.image, uid)
        ordered = [files[i] for i in geometry.order]
        in_order = [headers[i] for i in geometry.order]
        _check_file_sizes(in_order, ordered, uid, geometry)
        image = to_canonical(_volume(ordered, uid, geometry, where), geometry.affine)
        label = None
        if pair.label is not None and pair.label.name.endswith(NIFTI_SUFFIXES):
            label = self._mask(pair.label, geometry, where, image.shape)
        elif pair.label is not None:
            at = [f"{path}: series {uid}" for path in ordered]
            label = self._segments(pair.label, geometry, in_order, at, where)
        return ImportedCase(
            case_id=pair.case_id,
            image=image,
            label=label,
            spacing=canonical_spacing(geometry.affine, geometry.zooms),
            canonical_affine=canonical_affine(geometry.affine, geometry.shape),
            source_affine=geometry.affine,
            source_shape=geometry.shape,
            class_names=self.masks.class_names,
            label_values=self.masks.label_values,
        )

    def _mask(self, path: Path, geometry: Geometry, where: str,
              shape: tuple[int, ...]) -> NDArray[np.uint8]:  # fmt: skip
        """A NIfTI mask on the series' grid, in whatever voxel order it is stored."""
        mask = read_nifti(path)
        affine = np.asarray(mask.affine, dtype=np.float64)
        label = to_canonical(self.masks.class_indices(path, mask), affine)
        ours = canonical_affine(geometry.affine, geometry.shape)
        theirs = canonical_affine(affine, tuple(int(n) for n in mask.shape))
        if label.shape != shape or not np.allclose(theirs, ours, rtol=1e-4, atol=1e-3):
            raise DataError(
                f"{path}: field sform/qform: the mask's grid (shape {tuple(mask.shape)}, affine "
                f"{np.round(affine, 4).tolist()}) is not that of {where} (shape "
                f"{geometry.shape}, affine {np.round(geometry.affine, 4).tolist()})"
            )
        return label

    def _segments(self, path: Path, geometry: Geometry, headers: list[Dataset],
                  at: list[str], where: str) -> NDArray[np.uint8]:  # fmt: skip
        """A DICOM-SEG's segments as canonical class indices, matched to the classes by
        name; ``headers`` are the series' in slice order, ``at`` where each one is."""
        highdicom = library("highdicom", "reading DICOM-SEG")
        try:
            with quiet():
                seg = highdicom.seg.segread(path)
                labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
        except Exception as exc:  # highdicom and pydicom raise many types
            raise DataError(f"{path}: not a readable DICOM-SEG: {exc}") from exc
        lookup = self._segment_lookup(path, labels)
        uids = [_text(d, "SOPInstanceUID", w) for d, w in zip(headers, at, strict=True)]
        try:
            with quiet():
                numbers = np.asarray(seg.get_pixels_by_source_instance(uids, combine_segments=True))
        except Exception as exc:
            raise DataError(f"{path}: cannot read its segments on {where}: {exc}") from exc
        columns, rows, _ = geometry.shape
        if numbers.shape != (len(uids), rows, columns):
            raise DataError(f"{path}: segments of shape {numbers.shape} do not fit {where} "
                            f"({len(uids)} slices of {rows} x {columns})")  # fmt: skip
        return to_canonical(lookup[numbers].transpose(2, 1, 0), geometry.affine)

    def _segment_lookup(self, path: Path, labels: dict[int, str]) -> NDArray[np.uint8]:
        """Segment number -> class index, by the segments' labels."""
        names = self.masks.class_names
        bad = [number for number in labels if not 1 <= number <= 65535]
        if bad:
            raise tag_error(str(path), "SegmentNumber", f"{bad[0]}: 1 to 65535 required")
        lookup = np.zeros(max(labels, default=0) + 1, np.uint8)
        for number, name in labels.items():
            if name not in names[1:]:
                raise tag_error(str(path), "SegmentLabel",
                                f"segment {number} is {name!r}, not a class of the label map "
                                f"{list(names[1:])}")  # fmt: skip
            lookup[number] = names.index(name)
        return lookup


def _pair(case_id: str, series: _Series, label: Path | None) -> SourcePair:
    """Series ``series`` validated (single-frame files, geometry), its files in order."""
    paths = [p for p, _ in series.slices]
    datasets = [d for _, d in series.slices]
    uid = shown(series.uid)
    for path, ds in series.slices:
        if _value(ds, "NumberOfFrames", str(path)) not in (None, "", 1, "1"):
            raise tag_error(f"{path}: series {uid}", "NumberOfFrames", "multi-frame (enhanced) "
                            "images are not read; export one file per slice")  # fmt: skip
    geometry = series_geometry(datasets, paths, series.folder, uid)
    return SourcePair(case_id, series.folder, label, tuple(paths[i] for i in geometry.order))


def _is_localizer(series: _Series) -> bool:
    """A scout (ImageType LOCALIZER in every file): a few images in orthogonal planes,
    for planning the scan, not a volume."""
    for path, ds in series.slices:
        value = _value(ds, "ImageType", str(path))
        kinds = [value] if isinstance(value, str | bytes) else list(value or ())
        if "LOCALIZER" not in (str(kind).strip().upper() for kind in kinds):
            return False
    return True


def _volume(files: list[Path], uid: str, geometry: Geometry, where: str) -> NDArray[np.float32]:
    """The series' modality values, (column, row, slice): the affine's voxel order."""
    columns, rows, n = geometry.shape
    try:
        volume = np.empty((n, rows, columns), np.float32)
    except MemoryError:
        raise DataError(f"{where}: {geometry.shape} voxels do not fit in memory") from None
    for k, path in enumerate(files):
        dataset = read_dataset(path, pixels=True)
        volume[k] = _pixels(dataset, f"{path}: series {uid}", (rows, columns))
    return volume.transpose(2, 1, 0)


def _group(files: list[Path]) -> tuple[dict[str, _Series], dict[str, list[Path]]]:
    """Image series by SeriesInstanceUID, and DICOM-SEG files by the series they label."""
    images: dict[str, _Series] = {}
    segmentations: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        ds = read_dataset(path, pixels=False)
        where = str(path)
        sop_class = _sop_class(ds, where)
        if sop_class == SEG_STORAGE:
            segmentations[_referenced_series(ds, where)].append(path)
            continue
        if sop_class == DICOMDIR:
            continue  # the index of a DICOM medium, not part of any series
        uid = _text(ds, "SeriesInstanceUID", where)
        images.setdefault(uid, _Series(uid, [])).slices.append((path, ds))
    readable = {}
    for uid, series in images.items():
        if any(_value(d, "Rows", str(p)) is not None for p, d in series.slices):
            readable[uid] = series  # an image series; files in it without Rows are refused
    return readable, segmentations


def _sop_class(ds: Dataset, where: str) -> Any:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID (all a DICOMDIR has)."""
    meta = getattr(ds, "file_meta", None)
    stored = None if meta is None else _value(meta, "MediaStorageSOPClassUID", where)
    return _value(ds, "SOPClassUID", where) or stored


def _referenced_series(ds: Dataset, where: str) -> str:
    from pydicom.sequence import Sequence as Items

    references = _required(ds, "ReferencedSeriesSequence", where)
    if not isinstance(references, Items):
        raise tag_error(where, "ReferencedSeriesSequence", f"not a sequence: {references!r}")
    return _text(references[0], "SeriesInstanceUID", f"{where}: ReferencedSeriesSequence")


def _stems(images: dict[str, _Series]) -> list[tuple[str, _Series]]:
    """Each series' name in its folder: the folder's, or with ``_<SeriesNumber>`` (else
    ``_<index>``) when the folder holds several."""
    by_folder: dict[Path, list[_Series]] = defaultdict(list)
    for series in images.values():
        by_folder[series.folder].append(series)
    named = []
    for folder, group in by_folder.items():
        if len(group) == 1:
            named.append((folder.name, group[0]))
            continue
        group.sort(key=lambda s: s.uid)
        numbers = [_value(s.slices[0][1], "SeriesNumber", str(s.slices[0][0])) for s in group]
        unique = None not in numbers and len({str(n) for n in numbers}) == len(numbers)
        for index, (series, number) in enumerate(zip(group, numbers, strict=True), 1):
            named.append((f"{folder.name}_{number if unique else index}", series))
    return named


def _case_id(source: Path, folder: Path, stem: str) -> str:
    parents = folder.relative_to(source).parts[:-1] if folder != source else ()
    return check_case_id(case_name("_".join((*parents, stem))), source)


def _check_unique(named: dict[str, tuple[str, _Series]], stems: list[tuple[str, _Series]],
                  source: Path) -> None:  # fmt: skip
    """Two series whose folder names map to one case id: name both."""
    if len(named) == len(stems):
        return
    seen: dict[str, Path] = {}
    for stem, series in stems:
        case_id = _case_id(source, series.folder, stem)
        if case_id in seen:
            raise DataError(f"{series.folder}: case id {case_id!r} is also that of "
                            f"{seen[case_id]}; rename one of the folders")  # fmt: skip
        seen[case_id] = series.folder


def _check_file_sizes(
    headers: list[Dataset], paths: list[Path], uid: str, geometry: Geometry
) -> None:
    """Uncompressed files must hold the pixels their tags describe: checked on the file
    sizes, before the volume is allocated (a few tags could otherwise claim gigabytes)."""
    columns, rows, _ = geometry.shape
    for header, path in zip(headers, paths, strict=True):
        where = f"{path}: series {uid}"
        bits = _integer(header, "BitsAllocated", where)
        if _transfer_syntax(header, where).is_compressed or bits not in BITS:
            continue  # checked when decoding
        needed = rows * columns * bits // 8
        try:
            size = path.stat().st_size
        except OSError as exc:  # gone or unreadable since discovery
            raise DataError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
        if size < needed:
            raise tag_error(where, "PixelData", f"the file holds {size} bytes, fewer than the "
                            f"{needed} bytes of pixels its tags describe (truncated?)")  # fmt: skip


def _pixels(ds: Dataset, where: str, shape: tuple[int, int]) -> NDArray[np.float32]:
    """One slice's modality values: stored values times RescaleSlope plus RescaleIntercept."""
    _check_decodable(ds, where)
    if _integer(ds, "SamplesPerPixel", where) != 1:
        raise tag_error(where, "SamplesPerPixel", "colour images are not read; 1 required")
    photometric = _text(ds, "PhotometricInterpretation", where)
    if photometric not in MONOCHROME:
        raise tag_error(where, "PhotometricInterpretation", f"{photometric!r}: one of "
                        f"{', '.join(MONOCHROME)} required")  # fmt: skip
    bits = _integer(ds, "BitsAllocated", where)
    if bits not in BITS:
        raise tag_error(where, "BitsAllocated", f"{bits}: one of {BITS} required")
    if "PixelData" not in ds:
        raise tag_error(where, "PixelData", "missing (float pixel data is not read)")
    try:
        with quiet():
            stored = np.asarray(ds.pixel_array)
    except MemoryError:
        raise tag_error(where, "PixelData", "the pixels do not fit in memory") from None
    except Exception as exc:  # pydicom's decoders raise many types
        raise tag_error(where, "PixelData", f"cannot decode the pixels: {exc}") from exc
    if stored.shape != shape:
        raise tag_error(where, "PixelData", f"pixels of shape {stored.shape}, rows x columns "
                        f"{shape} expected")  # fmt: skip
    slope = _number(ds, "RescaleSlope", where, 1.0)
    intercept = _number(ds, "RescaleIntercept", where, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        values = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    if not np.isfinite(values).all():
        raise tag_error(where, "RescaleSlope", f"slope {slope} and intercept {intercept} give "
                        "values beyond float32")  # fmt: skip
    return values


def _check_decodable(ds: Dataset, where: str) -> None:
    """Refuse a transfer syntax no installed package decodes, naming the packages that
    would (pydicom decodes the uncompressed ones, RLE, and through Pillow and pyjpegls,
    which highdicom installs, JPEG baseline/extended, JPEG 2000 and JPEG-LS)."""
    from pydicom.pixels import get_decoder

    syntax = _transfer_syntax(ds, where)
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise tag_error(
            where, "TransferSyntaxUID", f"{syntax} ({syntax.name}): pydicom has no decoder for it"
        ) from None
    if not decoder.is_available:
        raise tag_error(where, "TransferSyntaxUID",
                        f"{syntax} ({syntax.name}) is compressed and no installed package "
                        f"decodes it; pydicom's decoders need: "
                        f"{'; or '.join(decoder.missing_dependencies)} (pip: python-gdcm, or "
                        "pylibjpeg with the pylibjpeg-* plugin named)")  # fmt: skip


def _transfer_syntax(ds: Dataset, where: str) -> Any:
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        raise tag_error(where, "TransferSyntaxUID", "missing (no file meta information)")
    text = _text(meta, "TransferSyntaxUID", where)
    with quiet():
        syntax = UID(text)
    if not syntax.is_transfer_syntax:
        raise tag_error(where, "TransferSyntaxUID", f"{shown(text)} is not a known transfer syntax")
    return syntax


@hookimpl
def duoseg_importer() -> list[Component]:
    return [
        Component("dicom", DicomImporter, "DICOM series (labels: NIfTI masks or DICOM-SEG)"),
    ]
