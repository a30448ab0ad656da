"""Prediction outputs: a Zarr group written slab by slab, or NIfTI files in the source grid.

Both are complete only when their completion record, written last, says so; an
interrupted run leaves nothing that reads as complete, and rerunning finishes it
(Zarr resumes at the first unwritten slab of the case it was on).
"""

from __future__ import annotations

import gzip
import json
import shutil
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import nibabel as nib
import numpy as np
import zarr
from duoseg.core.data.ngff import AXES, prediction_metadata, write_group_metadata
from duoseg.core.data.orientation import Boxes, source_blocks
from duoseg.core.data.zarr_arrays import ZarrArray, chunk_path
from duoseg.core.errors import DataError, PredictError
from duoseg.core.fs import write_atomically
from duoseg.core.inference.postprocess import largest_components
from duoseg.core.interfaces.store import COMPLETION_FILE
from duoseg.core.interfaces.writer import FolderSink
from duoseg.core.records.case import CaseMeta, check_case_id
from nibabel.nifti1 import Nifti1Extension
from numpy.typing import NDArray

MARKER = "duoseg-prediction.json"
EXTENSION_KEY = "duoseg"  # {"duoseg": {"labels": {...}}} in a label file's comment extension
COMMENT_CODE = 6  # NIfTI extension code "comment"
NIFTI_BLOCK_BYTES = 64 * 2**20  # int16 voxels per block written to a NIfTI label file


def prepare_output(path: Path, *, overwrite: bool, run: Mapping[str, Any] | None = None) -> None:
    """Refuse to replace a finished output (unless ``overwrite``) or anything not ours.
    ``run`` (format, checkpoint digest, options) goes into MARKER: an unfinished output
    is resumed only by the same run - another's finished cases are not this run's - and
    is otherwise refused, or cleared with ``overwrite``."""
    ours = json.loads(json.dumps(dict(run or {}), default=str))  # as MARKER reads back
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path, ours)
        return
    if not (path / MARKER).exists():
        raise PredictError(f"{path}: exists and is not a duoseg prediction; refusing to write")
    if is_complete(path) and not overwrite:
        raise PredictError(f"{path}: output exists and is complete; pass --overwrite")
    recorded = _recorded_run(path)
    if not is_complete(path) and recorded == ours:
        return  # an interrupted run of this same prediction: resume it
    if not overwrite:
        changed = "; ".join(
            f"{key}: {recorded.get(key)!r} there, {ours.get(key)!r} now"
            for key in sorted(set(recorded) | set(ours))
            if recorded.get(key) != ours.get(key)
        )
        raise PredictError(
            f"{path}: an unfinished prediction by another run ({changed}); rerun that one "
            "to finish it, or pass --overwrite to start afresh"
        )
    for child in path.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    _write_marker(path, ours)


def _write_marker(path: Path, run: dict[str, Any]) -> None:
    marker = {"format": "duoseg-prediction", "run": run}
    write_atomically(path / MARKER, lambda tmp: tmp.write_text(json.dumps(marker)))


def _recorded_run(path: Path) -> dict[str, Any]:
    """The run MARKER records; {} for a marker from before runs were recorded."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise PredictError(f"{path / MARKER}: not a readable prediction marker: {exc}") from exc
    run = marker.get("run") if isinstance(marker, dict) else None
    return run if isinstance(run, dict) else {}


def finish_output(
    path: Path,
    cases: list[str],
    reports: list[dict[str, Any]],
    labels: Mapping[str, int] | None = None,
) -> None:
    """The completion record, written last; ``labels`` are the model's classes 1..C
    (``{name: source label value}`` in class order), which ``duoseg evaluate`` reads."""
    record: dict[str, Any] = {"format": "duoseg-prediction", "cases": cases, "reports": reports}
    if labels is not None:
        record["labels"] = dict(labels)
    write_atomically(
        path / COMPLETION_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1))
    )


def labels_extension(labels: Mapping[str, int]) -> Nifti1Extension[bytes]:
    """A NIfTI comment extension recording a label file's classes ``{name: value}``."""
    text = json.dumps({EXTENSION_KEY: {"labels": dict(labels)}})
    return Nifti1Extension("comment", text.encode())


def recorded_labels(path: Path) -> Any | None:
    """The ``labels`` a prediction records - in a completion record (JSON) or in a label
    file's duoseg NIfTI extension - unchecked; None if ``path`` records none."""
    if not path.is_file():
        return None
    if path.name == COMPLETION_FILE:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PredictError(f"{path}: not a readable completion record: {exc}") from exc
        return record.get("labels") if isinstance(record, dict) else None
    try:
        extensions = nib.load(path).header.extensions
    except Exception:  # not a NIfTI file: whoever reads its voxels reports that
        return None
    for extension in extensions:
        if extension.get_code() != COMMENT_CODE:
            continue
        try:
            content = json.loads(extension.get_content())
        except ValueError:  # another program's comment
            continue
        if isinstance(content, dict) and isinstance(content.get(EXTENSION_KEY), dict):
            return content[EXTENSION_KEY].get("labels")
    return None


def is_complete(path: Path) -> bool:
    return (path / COMPLETION_FILE).exists()


class PredictionReader:
    """A finished Zarr prediction, read chunk file by chunk file like the cache: a
    missing or truncated chunk raises naming the output, case, array and chunk."""

    def __init__(self, path: Path) -> None:
        if not (path / MARKER).exists():
            raise PredictError(f"{path}: not a duoseg prediction (no {MARKER})")
        if not is_complete(path):
            raise PredictError(
                f"{path}: prediction is incomplete (no {COMPLETION_FILE}); rerun predict"
            )
        self.path = path
        record = json.loads((path / COMPLETION_FILE).read_text())
        self._cases = [check_case_id(c, path) for c in record["cases"]]

    def cases(self) -> list[str]:
        return list(self._cases)

    def array(self, case_id: str, name: str = "labels") -> ZarrArray:
        """``labels`` (z, y, x) uint8 class indices or ``probabilities`` (c, z, y, x)."""
        if case_id not in self._cases:
            raise PredictError(f"{self.path}: no case {case_id!r} (cases: {self._cases})")
        directory = self.path / "cases" / case_id / name
        return ZarrArray(directory, f"prediction {self.path}, case {case_id}, array {name}")

    def verify(self) -> list[str]:
        """Read every chunk of every case; the problems found, one line each."""
        problems = []
        for case_id in self._cases:
            names = ["labels"]
            if (self.path / "cases" / case_id / "probabilities").exists():
                names.append("probabilities")
            for name in names:
                try:
                    array = self.array(case_id, name)
                    for index in array.chunks_touched(tuple(slice(0, n) for n in array.shape)):
                        array.chunk(index)
                except DataError as exc:
                    problems.append(str(exc))
        return problems


class ZarrSink(FolderSink):
    """``OUTPUT/cases/<case>/labels`` (uint8, one chunk per slice) and optionally
    ``probabilities`` (float16), with ``progress.json`` after every slab; a finished
    case's group is an OME-Zarr label image (:mod:`duoseg.core.data.ngff`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = zarr.open_group(str(path), mode="a")
        self.case: Path | None = None

    def finished(self, case_id: str) -> bool:
        return (self.path / "cases" / check_case_id(case_id, self.path) / "complete.json").exists()

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        self.case = self.path / "cases" / check_case_id(meta.case_id, self.path)
        for part in (self.path / "cases", self.case):
            if part.is_symlink():  # writing through it would land outside OUTPUT
                raise PredictError(f"{self.path}: {part} is a symbolic link; refusing to write")
        if (self.case / "complete.json").exists():
            return meta.shape[0]
        progress = self.case / "progress.json"
        group = self.root.require_group(f"cases/{meta.case_id}")
        chunks = (1, *meta.shape[1:])
        group.require_array(  # metadata only: chunks are written by _write_slices
            "labels",
            shape=meta.shape,
            dtype="uint8",
            chunks=chunks,
            fill_value=0,
            compressors=None,  # read back by ZarrArray, which refuses missing chunks
            config={"write_empty_chunks": True},
            dimension_names=AXES,  # NGFF: they name the axes of the case's multiscale
        )
        self.keep_probabilities = probabilities
        if probabilities:
            group.require_array(
                "probabilities",
                shape=(len(meta.class_names), *meta.shape),
                dtype="float16",
                chunks=(len(meta.class_names), *chunks),
                fill_value=0,
                compressors=None,
                config={"write_empty_chunks": True},
                dimension_names=("c", *AXES),
            )
        return int(json.loads(progress.read_text())["done"]) if progress.exists() else 0

    def write(
        self, z: int, labels: NDArray[np.uint8], probabilities: NDArray[np.float16] | None
    ) -> None:
        assert self.case is not None
        self._write_slices("labels", z, labels)
        if self.keep_probabilities and probabilities is not None:
            self._write_slices("probabilities", z, probabilities)
        done = {"done": z + len(labels)}
        write_atomically(self.case / "progress.json", lambda tmp: tmp.write_text(json.dumps(done)))

    def _write_slices(self, name: str, z: int, data: NDArray[Any]) -> None:
        """Write the chunk files of slices ``z ..`` (one uncompressed little-endian chunk per
        slice, as the array's metadata says) ourselves: zarr-python writes from an event
        loop thread, so a full disk surfaced as a traceback from that thread."""
        assert self.case is not None
        index: tuple[int, ...]
        for offset in range(data.shape[-3]):
            if name == "labels":
                index, chunk = (z + offset, 0, 0), data[offset]
            else:  # (classes, z, y, x): one chunk holds every class of a slice
                index, chunk = (0, z + offset, 0, 0), data[:, offset]
            path = chunk_path(self.case / name, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.ascontiguousarray(chunk, chunk.dtype.newbyteorder("<")).tobytes())

    def end(self, meta: CaseMeta, lcc_box: tuple[slice, ...] | None) -> None:
        assert self.case is not None
        if (self.case / "complete.json").exists():
            return
        if lcc_box is not None:
            slices = ZarrArray(self.case / "labels", f"prediction {self.path}, case {meta.case_id}")
            labels = slices[lcc_box[0]]
            box = (slice(None), *lcc_box[1:])
            labels[box] = largest_components(labels[box], len(meta.class_names))
            self._write_slices("labels", lcc_box[0].start, labels)
        # Viewers see the case only once its labels are final.
        write_group_metadata(self.case, prediction_metadata(meta))
        info = {
            "source_affine": meta.source_affine,
            "label_values": list(meta.label_values),
            "spacing": list(meta.spacing),
            "shape": list(meta.shape),
        }
        write_atomically(self.case / "complete.json", lambda tmp: tmp.write_text(json.dumps(info)))


class ScratchSink(FolderSink):
    """Each case one file (:meth:`file`), which needs the whole case to write: slabs go
    to an uncompressed scratch file beside it (memory stays flat in the depth), and at
    the case's end :meth:`_save` turns that into the file. Subclasses write only that."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.labels: ScratchLabels | None = None

    @abstractmethod
    def file(self, case_id: str) -> Path:
        """Where ``case_id``'s output goes."""

    @abstractmethod
    def _save(self, meta: CaseMeta, labels: ScratchLabels, target: Path) -> None:
        """Write ``target`` (atomically) from the case's class indices ``labels``."""

    def finished(self, case_id: str) -> bool:
        return self.file(case_id).exists()

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        if probabilities:
            raise PredictError(f"{self.path}: --probabilities needs a Zarr OUTPUT (a .zarr path)")
        if self.finished(meta.case_id):  # written by an interrupted run: resume after it
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
        labels, self.labels = self.labels, None
        try:
            if lcc_box is not None:
                labels[lcc_box] = largest_components(labels[lcc_box], len(meta.class_names))
            self._save(meta, labels, self.file(meta.case_id))
        finally:
            labels.path.unlink(missing_ok=True)


class NiftiSink(ScratchSink):
    """``OUTPUT/<case>_label.nii.gz`` in the source file's grid, orientation and label values,
    recording the classes in a NIfTI extension. With ``single_file``, ``path`` is the one
    file (``.nii`` or ``.nii.gz``) that the only case is written to (always rewritten:
    whoever makes the sink decides whether an existing file may be replaced). :meth:`_save`
    streams the scratch file into the NIfTI file block by block (reoriented to the
    source, mapped to the source label values, gzipped)."""

    def __init__(self, path: Path, *, single_file: bool = False) -> None:
        super().__init__(path)
        self.single_file = single_file
        self.cases: list[str] = []

    def file(self, case_id: str) -> Path:
        if self.single_file:
            return self.path
        return self.path / f"{check_case_id(case_id, self.path)}_label.nii.gz"

    def finished(self, case_id: str) -> bool:
        return not self.single_file and super().finished(case_id)

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        self.cases.append(meta.case_id)
        if self.single_file and len(self.cases) > 1:
            raise PredictError(f"{self.path}: a file OUTPUT holds one case; got cases {self.cases}")
        return super().begin(meta, probabilities)

    def _save(self, meta: CaseMeta, labels: ScratchLabels, target: Path) -> None:
        suffix = ".nii.gz" if target.name.endswith(".nii.gz") else ".nii"
        partial = target.with_name(f".{target.name.removesuffix(suffix)}.partial{suffix}")
        try:
            _write_labels(partial, labels, meta)
            write_atomically(target, partial.replace)
        finally:
            partial.unlink(missing_ok=True)


class ScratchLabels:
    """A (z, y, x) uint8 array in an uncompressed file, read and written box by box.

    Each access maps the file for that access only: mapped pages count as the
    process's resident memory, so one map held open would grow it by a byte per voxel
    written (measured: +123 MiB at 512 x 512 x 512)."""

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        self.path, self.shape = path, shape
        self.size = int(np.prod(shape))
        with open(path, "wb") as handle:
            handle.truncate(self.size)

    def __getitem__(self, box: tuple[slice, ...]) -> NDArray[np.uint8]:
        mapped = np.memmap(self.path, np.uint8, "r", shape=self.shape)
        return np.array(mapped[box])  # a copy: the map goes with this frame

    def __setitem__(self, box: tuple[slice, ...], values: NDArray[np.uint8]) -> None:
        mapped = np.memmap(self.path, np.uint8, "r+", shape=self.shape)
        mapped[box] = values


def _open_for_writing(path: Path) -> gzip.GzipFile | BinaryIO:
    """gzip level 1 for .gz names (nibabel's own choice: fast, most of the gain)."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=1)
    return open(path, "wb")


def label_image(meta: CaseMeta, data: NDArray[np.int16] | None = None) -> nib.Nifti1Image:
    """A label image in the source's grid, recording its classes in an extension:
    ``data`` (source label values, (i, j, k)), or, when None, a header only (a
    zero-stride stand-in array that holds no voxels)."""
    affine = np.asarray(meta.source_affine)
    voxels = np.broadcast_to(np.int16(0), meta.source_shape) if data is None else data
    image = nib.Nifti1Image(voxels, affine)
    image.header.set_xyzt_units("mm")
    classes = zip(meta.class_names[1:], meta.label_values[1:], strict=True)
    image.header.extensions.append(labels_extension(dict(classes)))
    image.update_header()
    return image


def source_labels(labels: Boxes, meta: CaseMeta) -> NDArray[np.int16]:
    """Canonical class indices as source label values in the source's (i, j, k) grid,
    converted block by block (no whole-volume temporary besides the result)."""
    values = np.asarray(meta.label_values, dtype=np.int16)
    out = np.empty(meta.source_shape, np.int16, order="F")
    k = 0
    for block in _label_blocks(labels, meta):
        out[..., k : k + block.shape[2]] = values[block]
        k += block.shape[2]
    return out


def _label_blocks(labels: Boxes, meta: CaseMeta) -> Iterator[NDArray[np.uint8]]:
    """Class indices in source order, about :data:`NIFTI_BLOCK_BYTES` of labels a block."""
    plane_bytes = 2 * int(np.prod(meta.source_shape)) // meta.source_shape[2]
    planes = max(1, NIFTI_BLOCK_BYTES // plane_bytes)
    yield from source_blocks(labels, np.asarray(meta.source_affine), planes)


def _write_labels(path: Path, labels: ScratchLabels, meta: CaseMeta) -> None:
    """Stream canonical class indices into a NIfTI label file in the source's grid."""
    values = np.asarray(meta.label_values, dtype=np.int16)
    with _open_for_writing(path) as out:
        label_image(meta).header.write_to(out)
        for block in _label_blocks(labels, meta):
            out.write(values[block].tobytes(order="F"))
