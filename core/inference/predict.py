"""``duoseg predict``: inputs (NIfTI file, folder or cache) to outputs (NIfTI or Zarr)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from duoseg.core.data.cache import open_cache
from duoseg.core.errors import DataError, DuosegError, PredictError
from duoseg.core.inference.outputs import NiftiSink, ZarrSink, finish_output, prepare_output
from duoseg.core.inference.streaming import (
    Model,
    Options,
    Report,
    case_from_image,
    load_model,
    predict_case,
)
from duoseg.core.interfaces.importer import SourcePair
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.registry import Registry

NIFTI = (".nii.gz", ".nii")


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in ("_image.nii.gz", "_image.nii", *NIFTI):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise PredictError(f"{path}: not a NIfTI file (.nii or .nii.gz)")


def _inputs(
    source: Path, model: Model, registry: Registry, cases: list[str] | None, run_dir: Path
) -> Iterator[CacheCase]:
    if source.is_file() or any(source.name.endswith(s) for s in NIFTI):
        files = [source]
    elif source.is_dir() and not _is_cache(source, registry):
        files = sorted(
            p for p in source.iterdir() if p.name.endswith(NIFTI) and "_label." not in p.name
        )
        if not files:
            raise PredictError(f"{source}: no NIfTI images found")
    else:
        cache = open_cache(source, registry)
        try:
            model.preprocessing.check_matches(
                cache.preprocessing, ours=f"the model of {run_dir}", theirs=f"cache {source}"
            )
        except DataError as exc:
            raise PredictError(
                f"{exc} (NIfTI inputs are always prepared as the model's training data)"
            ) from None
        for case_id in cases or cache.cases():
            yield cache.case(case_id)
        return
    importer = registry.build("importer", "nifti", labels=_label_map(model), require_labels=False)
    for path in files:
        if not path.exists():
            raise PredictError(f"{path}: input not found")
        image = importer.load(SourcePair(_case_id(path), path, None))
        yield case_from_image(image, model)


def _label_map(model: Model) -> dict[str, int]:
    return model.preprocessing.label_map()


def _is_cache(path: Path, registry: Registry) -> bool:
    try:
        open_cache(path, registry).close()
    except DuosegError:
        return False
    return True


def predict_paths(
    run_dir: Path,
    source: Path,
    output: Path,
    *,
    options: Options,
    device: str,
    cases: list[str] | None,
    overwrite: bool,
    registry: Registry,
    progress: bool = False,
    on_case: Callable[[Report], None] | None = None,
) -> list[Report]:
    """Predict every input case into ``output``; the completion record comes last.
    ``on_case`` is called with each case's report as soon as the case is written.
    An ``output`` ending in .nii or .nii.gz is one file, for one input NIfTI file."""
    from tqdm import tqdm

    model = load_model(run_dir, registry, device)
    if not source.exists():
        raise PredictError(f"{source}: input not found")
    single_file = output.name.endswith(NIFTI)
    sink: ZarrSink | NiftiSink
    if single_file:
        _check_file_output(source, output, overwrite=overwrite)
        sink = NiftiSink(output, single_file=True)
    else:
        prepare_output(output, overwrite=overwrite)
        sink = ZarrSink(output) if output.suffix == ".zarr" else NiftiSink(output)
    reports = []
    for case in _inputs(source, model, registry, cases, run_dir):
        bar = tqdm(total=case.meta.shape[0], desc=case.case_id, unit="slice", disable=not progress)
        reports.append(predict_case(model, case, sink, options, progress=bar.update))
        bar.close()
        if on_case is not None:
            on_case(reports[-1])
    if not single_file:  # the file itself, renamed into place last, is the record
        finish_output(output, [r.case_id for r in reports],
                      [dataclasses.asdict(r) for r in reports], _label_map(model))  # fmt: skip
    return reports


def _check_file_output(source: Path, output: Path, *, overwrite: bool) -> None:
    """A .nii/.nii.gz OUTPUT: one input NIfTI file, and no file replaced unless asked."""
    if source.is_dir() or not source.name.endswith(NIFTI):
        what = "a folder (of images, or a cache)" if source.is_dir() else "not a .nii/.nii.gz file"
        raise PredictError(
            f"{output}: a .nii/.nii.gz OUTPUT is one label file for one input image, but "
            f"INPUT {source} is {what}; give a folder or *.zarr OUTPUT"
        )
    if output.is_dir():
        raise PredictError(
            f"{output}: OUTPUT names a NIfTI file but is an existing folder; refusing to replace it"
        )
    if output.exists() and not overwrite:
        raise PredictError(f"{output}: output file exists; pass --overwrite")
    output.parent.mkdir(parents=True, exist_ok=True)
