"""``duoseg predict``: inputs (NIfTI file or folder, DICOM series, cache) to outputs (NIfTI,
Zarr or DICOM-SEG)."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from duoseg.core.data.cache import open_cache
from duoseg.core.data.dicom import holds_dicom
from duoseg.core.distributed import Ranks
from duoseg.core.errors import DataError, DuosegError, PredictError
from duoseg.core.inference.outputs import NiftiSink, ZarrSink, finish_output, prepare_output
from duoseg.core.inference.sharding import (
    clear_reports,
    gather_reports,
    process_group,
    rank0_first,
    save_report,
    saved_report,
    shard,
)
from duoseg.core.inference.streaming import (
    LabelSink,
    Model,
    Options,
    Report,
    case_from_image,
    load_model,
    predict_case,
)
from duoseg.core.interfaces.importer import Importer, SourcePair
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.registry import Registry

NIFTI = (".nii.gz", ".nii")
FORMATS = ("nifti", "zarr", "dicom-seg")


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in ("_image.nii.gz", "_image.nii", *NIFTI):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise PredictError(f"{path}: not a NIfTI file (.nii or .nii.gz)")


@dataclasses.dataclass(frozen=True)
class Input:
    """One case of INPUT, read only when loaded: under torchrun each rank reads its own."""

    case_id: str
    load: Callable[[], CacheCase]
    files: tuple[Path, ...] = ()  # a DICOM series' files, in slice order, for DICOM-SEG


def _inputs(
    source: Path, model: Model, registry: Registry, cases: list[str] | None, run_dir: Path
) -> list[Input]:
    if source.is_file() or any(source.name.endswith(s) for s in NIFTI):
        files = [source]
    elif source.is_dir() and not _is_cache(source, registry):
        files = sorted(
            p for p in source.iterdir() if p.name.endswith(NIFTI) and "_label." not in p.name
        )
        if not files and holds_dicom(source):
            return _dicom_inputs(source, model, registry, cases)
        if not files:
            raise PredictError(f"{source}: no NIfTI images found (nor DICOM files)")
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
        return [Input(c, functools.partial(cache.case, c)) for c in cases or cache.cases()]
    importer = registry.build("importer", "nifti", labels=_label_map(model), require_labels=False)
    inputs = []
    for path in files:
        if not path.exists():
            raise PredictError(f"{path}: input not found")
        load = functools.partial(_load_image, importer, path, model)
        inputs.append(Input(_case_id(path), load))
    return inputs


def _load_image(importer: Importer, path: Path, model: Model) -> CacheCase:
    return case_from_image(importer.load(SourcePair(_case_id(path), path, None)), model)


def _dicom_inputs(
    source: Path, model: Model, registry: Registry, cases: list[str] | None
) -> list[Input]:
    """The series under a folder of DICOM files (``dicom`` importer); labels are not read."""
    importer = registry.build("importer", "dicom", labels=_label_map(model), require_labels=False)
    pairs = {p.case_id: dataclasses.replace(p, label=None) for p in importer.discover(source)}
    unknown = sorted(set(cases or ()) - set(pairs))
    if unknown:
        raise PredictError(f"{source}: no series {unknown}; its series: {sorted(pairs)}")
    return [
        Input(c, functools.partial(_load_series, importer, pairs[c], model), pairs[c].files)
        for c in cases or pairs
    ]


def _load_series(importer: Importer, pair: SourcePair, model: Model) -> CacheCase:
    return case_from_image(importer.load(pair), model)


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
    output_format: str | None = None,
) -> list[Report]:
    """Predict every input case into ``output``; the completion record comes last.
    Under torchrun, each rank predicts its share of the cases and returns their reports
    (core/inference/sharding.py). ``on_case`` is called with each case's report as soon
    as the case is written (not for the cases that a resumed run finds done).
    An ``output`` ending in .nii or .nii.gz is one file, for one input NIfTI file.
    ``output_format`` (nifti, zarr, dicom-seg) is inferred from ``output`` when None."""
    output_format = _output_format(output, output_format)
    ranks = Ranks.from_environment()
    single_file = output.name.endswith(NIFTI)
    if single_file and ranks.distributed:
        raise PredictError(
            f"{output}: a .nii/.nii.gz OUTPUT holds one case, which one rank predicts, but "
            f"there are {ranks.world} ranks (WORLD_SIZE); give a folder or *.zarr OUTPUT"
        )
    model = load_model(run_dir, registry, ranks.device(device))
    if not source.exists():
        raise PredictError(f"{source}: input not found")
    if single_file:
        _check_file_output(source, output, overwrite=overwrite)
    inputs = _inputs(source, model, registry, cases, run_dir)
    predict = functools.partial(_predict, model, options=options, progress=progress)
    if single_file:  # the file itself, renamed into place last, is the record
        sink = NiftiSink(output, single_file=True)
        return [_announce(predict(item.load(), sink), on_case) for item in inputs]
    _check_unique(inputs, source)
    if output_format == "dicom-seg" and not all(item.files for item in inputs):
        raise PredictError(
            f"--format dicom-seg: INPUT {source} is not a folder of DICOM series, and a "
            "DICOM-SEG references the series it segments; use --format nifti or zarr"
        )

    def prepare() -> None:  # a sink may create OUTPUT's Zarr group, which only one rank may
        prepare_output(output, overwrite=overwrite)
        _folder_sink(output, output_format, inputs)

    with process_group(ranks):
        rank0_first(ranks, prepare)
        folder = _folder_sink(output, output_format, inputs)
        reports = []
        for item in shard(inputs, ranks):
            report = saved_report(output, item.case_id)
            if report is None:  # saved only once the sink has finished the case
                report = _announce(save_report(output, predict(item.load(), folder)), on_case)
            reports.append(report)
        everyone = {r.case_id: r for r in gather_reports(ranks, reports)}
        if ranks.rank == 0:
            ids = [item.case_id for item in inputs]
            finish_output(output, ids, [dataclasses.asdict(everyone[c]) for c in ids],
                          _label_map(model))  # fmt: skip
            clear_reports(output)  # only now: a kill before the record loses no report
    return reports


def _output_format(output: Path, requested: str | None) -> str:
    """``--format``, which must fit OUTPUT's name; else the format that name implies."""
    named = "zarr" if output.suffix == ".zarr" else "nifti"
    if requested is None or requested == named:
        return named
    if requested == "dicom-seg" and not output.name.endswith(NIFTI) and named == "nifti":
        return requested
    raise PredictError(
        f"{output}: --format {requested} does not fit OUTPUT; formats: {', '.join(FORMATS)} "
        "(zarr: OUTPUT *.zarr; nifti: a folder or one .nii/.nii.gz file; dicom-seg: a folder)"
    )


def _folder_sink(output: Path, output_format: str, inputs: list[Input]) -> LabelSink:
    if output_format == "zarr":
        return ZarrSink(output)
    if output_format == "dicom-seg":
        from duoseg.core.inference.dicom_seg import DicomSegSink

        return DicomSegSink(output, {item.case_id: item.files for item in inputs})
    return NiftiSink(output)


def _predict(
    model: Model, case: CacheCase, sink: LabelSink, *, options: Options, progress: bool
) -> Report:
    from tqdm import tqdm

    bar = tqdm(total=case.meta.shape[0], desc=case.case_id, unit="slice", disable=not progress)
    report = predict_case(model, case, sink, options, progress=bar.update)
    bar.close()
    return report


def _announce(report: Report, on_case: Callable[[Report], None] | None) -> Report:
    if on_case is not None:
        on_case(report)
    return report


def _check_unique(inputs: list[Input], source: Path) -> None:
    """Each case once: under torchrun two ranks would write one case's files at once."""
    twice = sorted(c for c, n in Counter(i.case_id for i in inputs).items() if n > 1)
    if twice:
        raise PredictError(f"{source}: case(s) {twice} given more than once; each is written once")


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
