"""duoseg's Python API: load a trained model and segment images; train, evaluate, export.

Each function is what the command of the same name does - the CLI (duoseg.apps.cli)
parses its arguments and calls these - so a notebook and ``duoseg ...`` share one code
path. MODEL is a run folder (``duoseg train --out``) or a model package (``duoseg
export``); errors are :class:`duoseg.core.DuosegError` with the one-line message the
CLI prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload

import nibabel as nib
import numpy as np
from duoseg.core.data.orientation import LPS_TO_RAS, canonical_case, check_volume, to_source
from duoseg.core.distributed import Ranks
from duoseg.core.errors import PredictError
from duoseg.core.inference.model import case_from_image, load_model
from duoseg.core.inference.outputs import label_image, source_labels
from duoseg.core.inference.predict import input_case, predict_model, predict_paths
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, Report, predict_case
from duoseg.core.interfaces.method import Model
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.records.case import CaseMeta
from duoseg.core.registry import Registry, load_plugins
from nibabel.affines import voxel_sizes
from nibabel.spatialimages import SpatialImage
from numpy.typing import ArrayLike, NDArray

PathLike: TypeAlias = str | os.PathLike[str]
Image: TypeAlias = PathLike | SpatialImage | ArrayLike
Space: TypeAlias = Literal["RAS", "LPS"]


def load(model: PathLike, device: str = "cpu", *, registry: Registry | None = None) -> Segmenter:
    """MODEL - a run folder or a model package - ready to segment on ``device`` (``cpu``,
    ``cuda``; under torchrun a bare ``cuda`` is this rank's GPU). ``registry`` defaults
    to every installed plugin (``duoseg.core.load_plugins()``)."""
    registry = registry or load_plugins()
    device = Ranks.from_environment().device(device)
    return Segmenter(load_model(Path(model), registry, device), registry)


class Segmenter:
    """A loaded model: :meth:`segment` one image in memory, :meth:`predict` files."""

    def __init__(self, model: Model, registry: Registry) -> None:
        self.model, self.registry = model, registry

    def __repr__(self) -> str:
        return f"<duoseg model {self.model.source} ({self.model.method}, {self.model.device})>"

    @property
    def classes(self) -> dict[str, int]:
        """``{class name: label value}`` of the classes 1..C, as the labels hold them."""
        return self.model.preprocessing.label_map()

    @overload
    def segment(self, image: Image, affine: ArrayLike | None = None, *,
                probabilities: Literal[False] = False, memory_budget_mib: float = 1024.0,
                lcc: bool = False, method_options: Mapping[str, Any] | None = None,
                space: Space = "RAS", name: str = "image") -> nib.Nifti1Image: ...  # fmt: skip
    @overload
    def segment(self, image: Image, affine: ArrayLike | None = None, *,
                probabilities: Literal[True], memory_budget_mib: float = 1024.0,
                lcc: bool = False, method_options: Mapping[str, Any] | None = None,
                space: Space = "RAS",
                name: str = "image") -> tuple[nib.Nifti1Image, nib.Nifti1Image]: ...  # fmt: skip
    def segment(self, image: Image, affine: ArrayLike | None = None, *,
                probabilities: bool = False, memory_budget_mib: float = 1024.0,
                lcc: bool = False, method_options: Mapping[str, Any] | None = None,
                space: Space = "RAS", name: str = "image") -> Any:  # fmt: skip
        """Segment one image: a path (NIfTI file, or a folder of one DICOM series), a
        nibabel image, or an array indexed (i, j, k) with ``affine``, the 4x4 map from
        voxel (i, j, k) to world mm in ``space``: ``"RAS"`` (nibabel's convention) or
        ``"LPS"`` (ITK's and DICOM's; a SimpleITK array is (k, j, i): pass ``array.T``).
        The voxel axes may point any way; the affine says how.

        Returns a label image (int16, the model's label values, e.g. 205..850 for
        MM-WHS) in the input's grid: the same voxels, and the input's affine (in RAS, as
        nibabel images are). With ``probabilities``, also a float32 image (i, j, k,
        class) of class probabilities. Streamed in slabs as ``duoseg predict`` is, with
        the same ``memory_budget_mib``, ``lcc`` (largest component per class) and
        ``method_options`` (``--method-option``); ``name`` names an in-memory image in
        errors."""
        options = _options(memory_budget_mib, lcc, probabilities, method_options)
        sink, meta = self._stream(image, _ras(affine, space, name), name, options)
        labels = label_image(meta, source_labels(sink.labels, meta))
        if not probabilities:
            return labels
        assert sink.probabilities is not None
        return labels, _probability_image(sink.probabilities, meta)

    def _stream(self, image: Image, affine: NDArray[np.float64] | None, name: str,
                options: Options) -> tuple[MemorySink, CaseMeta]:  # fmt: skip
        """The canonical labels of ``image``; its prepared volume is freed on return,
        before the labels are turned into the source grid's values."""
        sink = MemorySink()
        with ExitStack() as opened:
            case = self._case(image, affine, name, opened)
            predict_case(self.model, case, sink, options)
        return sink, case.meta

    def _case(self, image: Image, affine: ArrayLike | None, name: str,
              opened: ExitStack) -> CacheCase:  # fmt: skip
        """``image`` as a case prepared for the model (a path by ``predict``'s readers)."""
        if isinstance(image, str | os.PathLike):
            _no_affine(affine, image)
            return opened.enter_context(input_case(Path(image), self.model, self.registry))
        if isinstance(image, SpatialImage):
            _no_affine(affine, name)
            squeezed = nib.funcs.squeeze_image(image)
            data = squeezed.get_fdata(dtype=np.float32)
            grid = np.asarray(squeezed.affine, np.float64)
            zooms = np.asarray(squeezed.header.get_zooms()[:3], np.float64)
        else:
            if affine is None:
                raise PredictError(
                    f"{name}: an array needs its affine (4x4, voxel (i, j, k) -> RAS+ mm)"
                )
            data = np.asarray(image, dtype=np.float32)
            grid = np.asarray(affine, np.float64)
            zooms = voxel_sizes(grid)
        check_volume(name, data.shape, zooms, grid)
        prep = self.model.preprocessing
        spacing = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
        imported = canonical_case(name, data, grid, spacing, where=name,
                                  classes=(prep.class_names, prep.label_values))  # fmt: skip
        return case_from_image(imported, self.model)

    def predict(
        self,
        source: PathLike,
        output: PathLike,
        *,
        cases: list[str] | None = None,
        overwrite: bool = False,
        output_format: str | None = None,
        probabilities: bool = False,
        memory_budget_mib: float = 1024.0,
        lcc: bool = False,
        method_options: Mapping[str, Any] | None = None,
        progress: bool = False,
        on_case: Callable[[Report], None] | None = None,
    ) -> list[Report]:
        """``duoseg predict``: every case of ``source`` (NIfTI file or folder, DICOM
        folder, cache) into ``output`` (a .nii/.nii.gz file, a folder, or *.zarr), with
        a completion record last; under torchrun the ranks share the cases."""
        options = _options(memory_budget_mib, lcc, probabilities, method_options)
        return predict_model(self.model, Path(source), Path(output), options=options,
                             cases=cases, overwrite=overwrite, registry=self.registry,
                             progress=progress, on_case=on_case,
                             output_format=output_format)  # fmt: skip


def predict(
    model: PathLike,
    source: PathLike,
    output: PathLike,
    *,
    device: str = "cpu",
    cases: list[str] | None = None,
    overwrite: bool = False,
    output_format: str | None = None,
    probabilities: bool = False,
    memory_budget_mib: float = 1024.0,
    lcc: bool = False,
    method_options: Mapping[str, Any] | None = None,
    progress: bool = False,
    registry: Registry | None = None,
) -> list[Report]:
    """``duoseg predict MODEL INPUT OUTPUT``: :meth:`Segmenter.predict` of MODEL, with
    OUTPUT's format and the options refused before MODEL is read."""
    options = _options(memory_budget_mib, lcc, probabilities, method_options)
    return predict_paths(Path(model), Path(source), Path(output), options=options,
                         device=device, cases=cases, overwrite=overwrite,
                         registry=registry or load_plugins(), progress=progress,
                         output_format=output_format)  # fmt: skip


def _options(budget: float, lcc: bool, probabilities: bool,
             method: Mapping[str, Any] | None) -> Options:  # fmt: skip
    return Options(memory_budget_mib=budget, lcc_per_class=lcc, probabilities=probabilities,
                   method=dict(method or {}))  # fmt: skip


def _ras(affine: ArrayLike | None, space: Space, name: str) -> NDArray[np.float64] | None:
    """``affine`` (voxel -> world mm in ``space``) as nibabel's voxel -> RAS+ mm."""
    if affine is None:
        return None
    grid = np.asarray(affine, np.float64)
    if grid.shape != (4, 4):
        raise PredictError(f"{name}: affine has shape {grid.shape}, not (4, 4)")
    if space not in ("RAS", "LPS"):
        raise PredictError(f"{name}: space {space!r} is not 'RAS' or 'LPS'")
    return LPS_TO_RAS @ grid if space == "LPS" else grid


def _no_affine(affine: ArrayLike | None, where: object) -> None:
    if affine is not None:
        raise PredictError(f"{where}: has its own affine; pass affine only with an array")


def _probability_image(scores: NDArray[np.float16], meta: CaseMeta) -> nib.Nifti1Image:
    """(class, z, y, x) canonical probabilities as a (i, j, k, class) image in the
    source's grid, class by class."""
    out = np.empty((*meta.source_shape, len(scores)), np.float32)
    for c, plane in enumerate(scores):
        out[..., c] = to_source(plane, np.asarray(meta.source_affine))
    return nib.Nifti1Image(out, np.asarray(meta.source_affine))


def export(
    run: PathLike,
    target: PathLike,
    *,
    description: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
    overwrite: bool = False,
    registry: Registry | None = None,
) -> Path:
    """``duoseg export``: ``run``'s model as one package file ``target`` (docs/inference.md)."""
    from duoseg.core.inference.package import About, export_package

    about = About(description=description, licence=licence, citation=citation)
    return export_package(Path(run), Path(target), registry or load_plugins(), about=about,
                          overwrite=overwrite)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """A finished (or resumed) training: its folder, usable wherever MODEL is."""

    path: Path
    stages: int  # stages finished
    best_score: float  # the final predictor's best validation Dice; -1 without one
    best_stage: str  # the stage whose end best.safetensors holds; "" without one

    def __fspath__(self) -> str:
        return str(self.path)


def train(
    config: PathLike,
    *,
    cache: PathLike | None = None,
    out: PathLike = "runs/latest",
    overrides: Iterable[str] = (),
    resume: bool = False,
    deterministic: bool = False,
    registry: Registry | None = None,
) -> Run:
    """``duoseg train``: the schedule of the TOML ``config`` into the run folder ``out``.
    ``cache`` replaces ``data.cache``; ``overrides`` are ``KEY=VALUE`` (``--set``). Under
    torchrun, each rank trains its share (DDP) and rank 0 writes."""
    import torch
    import torch.distributed as dist
    from duoseg.core.config import check_components, load_config
    from duoseg.core.training.trainer import Trainer, config_as_dict

    settings = list(overrides)
    if cache is not None:
        settings.append(f"data.cache={json.dumps(str(cache))}")
    if deterministic:
        settings.append("train.deterministic=true")
    parsed = load_config(Path(config), settings)
    registry = registry or load_plugins()
    check_components(parsed, registry, source=str(config))
    ranks = Ranks.from_environment()
    if ranks.distributed and not dist.is_initialized():
        cuda = parsed.train.device.startswith("cuda")
        if cuda:  # NCCL talks to the current device: one GPU per rank
            torch.cuda.set_device(torch.device(ranks.device(parsed.train.device)))
        dist.init_process_group("nccl" if cuda else "gloo")
    trainer = Trainer(parsed, registry, Path(out), source=str(config),
                      raw_config=config_as_dict(parsed))  # fmt: skip
    state = trainer.run(resume=resume)
    return Run(Path(out), state.stage, state.best_score, state.best_stage)


@dataclass(frozen=True)
class Evaluation:
    """``duoseg evaluate``'s figures as data. ``table[metric][class]`` is the mean and
    sd over the cases (``{"mean": ..., "sd": ...}``), ``cases[case][class][metric]`` the
    per-case score; metrics ``dice``, ``jaccard``, ``asd`` and ``hd95`` (mm), classes
    those of ``labels`` and ``WH`` (their union). ``str()`` is the printed table."""

    labels: dict[str, int]  # {class name: label value}, in table order
    label_source: str  # where the classes came from
    cases: dict[str, dict[str, dict[str, float]]]
    table: dict[str, dict[str, dict[str, float]]]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``duoseg evaluate --json``)."""
        return asdict(self)

    def __str__(self) -> str:
        from duoseg.core.inference.score_files import format_table

        return format_table(self.as_dict())


def evaluate(
    prediction: PathLike,
    truth: PathLike,
    *,
    labels: Mapping[str, int] | None = None,
    run: PathLike | None = None,
    workers: int = 1,
    registry: Registry | None = None,
) -> Evaluation:
    """``duoseg evaluate``: Dice, Jaccard, ASD and HD95 of ``prediction`` against
    ``truth`` (label files, or folders of ``<case>_label.nii[.gz]``). The classes come
    from ``labels``, else MODEL ``run``, else the prediction's own record, else the
    values found in the ground truth."""
    from duoseg.core.inference.evaluate import evaluate as score

    result = score(Path(prediction), Path(truth), registry or load_plugins(), labels=labels,
                   run=None if run is None else Path(run), workers=workers)  # fmt: skip
    return Evaluation(result["labels"], result["label_source"], result["cases"], result["table"])
