"""``duoseg predict``: inputs (NIfTI file or folder, DICOM series, cache) to outputs (NIfTI,
Zarr or DICOM-SEG)."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from duoseg.core.data.cache import open_cache
from duoseg.core.distributed import Ranks
from duoseg.core.errors import DataError, DuosegError, PredictError
from duoseg.core.inference.model import case_from_image, load_model
from duoseg.core.inference.outputs import finish_output, prepare_output
from duoseg.core.inference.sharding import (
    REPORTS,
    check_same_cases,
    clear_reports,
    gather_reports,
    process_group,
    rank0_first,
    save_report,
    saved_report,
    shard,
)
from duoseg.core.inference.streaming import Options, Report, predict_case
from duoseg.core.interfaces.importer import Importer, SourcePair, file_checksum, pick
from duoseg.core.interfaces.method import Model
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.interfaces.writer import FolderSink, LabelSink, Writer
from duoseg.core.registry import Registry

Predict = Callable[[CacheCase, FolderSink], Report]


@dataclasses.dataclass(frozen=True)
class Input:
    """One case of INPUT, read only when loaded: under torchrun each rank reads its own."""

    case_id: str
    load: Callable[[], CacheCase]
    files: tuple[Path, ...] = ()  # a DICOM series' files, in slice order, for DICOM-SEG


def _inputs(source: Path, model: Model, registry: Registry, cases: list[str] | None, *,
            opened: ExitStack) -> list[Input]:  # fmt: skip
    """INPUT's cases: a cache's (it stays open in ``opened`` while they are read), or the
    images an importer reads there."""
    if source.is_dir() and _is_cache(source, registry):
        return _cache_inputs(source, model, registry, cases, opened=opened)
    importer, pairs = _images(source, model, registry, cases)
    return [Input(p.case_id, functools.partial(_load, importer, p, model), p.files) for p in pairs]


def _images(
    source: Path, model: Model, registry: Registry, cases: list[str] | None
) -> tuple[Importer, list[SourcePair]]:
    """The one importer that finds images in ``source``, and the images. Asked are the
    importers that take the model's label map (``labels``) and ``require_labels``: they
    read an image as the model's classes, without its labels."""
    wanted = {"labels", "require_labels"}
    readers = [
        n for n in registry.names("importer") if wanted <= set(registry.parameters("importer", n))
    ]
    claims = []
    for name in readers:
        importer = registry.build("importer", name, labels=_label_map(model), require_labels=False)
        pairs = importer.images(source, cases)
        if pairs:
            claims.append((name, importer, pairs))
    if not claims:
        raise PredictError(
            f"{source}: no images found that an importer reads (importers asked: "
            f"{', '.join(readers)}); INPUT is an image file, a folder of images or a cache"
        )
    if len(claims) > 1:
        raise PredictError(
            f"{source}: holds images of several importers ({', '.join(c[0] for c in claims)}); "
            "give a folder of one kind"
        )
    return claims[0][1], claims[0][2]


def _cache_inputs(source: Path, model: Model, registry: Registry, cases: list[str] | None, *,
                  opened: ExitStack) -> list[Input]:  # fmt: skip
    cache = opened.enter_context(open_cache(source, registry))
    try:
        model.preprocessing.check_matches(
            cache.preprocessing,
            ours=f"the model of {model.source or model.checkpoint}",
            theirs=f"cache {source}",
            cache=str(source),
        )
    except DataError as exc:
        raise PredictError(
            f"{exc} (NIfTI inputs are always prepared as the model's training data)"
        ) from None
    ids = pick({c: c for c in cache.cases()}, cases, source)  # before OUTPUT is touched
    return [Input(c, functools.partial(cache.case, c)) for c in ids]


def _load(importer: Importer, pair: SourcePair, model: Model) -> CacheCase:
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
    model_path: Path,
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
    """:func:`predict_model` with the model read from ``model_path`` (a run folder or a
    model package) onto ``device`` (under torchrun, this rank's)."""
    _checked_request(output, output_format, options, registry)  # before the model is read
    model = load_model(model_path, registry, Ranks.from_environment().device(device))
    return predict_model(model, source, output, options=options, cases=cases,
                         overwrite=overwrite, registry=registry, progress=progress,
                         on_case=on_case, output_format=output_format)  # fmt: skip


def predict_model(
    model: Model,
    source: Path,
    output: Path,
    *,
    options: Options,
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
    ``output_format`` names a ``writer`` plugin; when None, the one OUTPUT's name implies.
    A writer may take OUTPUT as one file (``nifti``: *.nii.gz) for one input image."""
    (output_format, writer), ranks = _checked_request(output, output_format, options, registry)
    single_file = writer.is_file(output)
    model.method.parse_options(options.method, "--method-option")  # before OUTPUT is made
    if not source.exists():
        raise PredictError(f"{source}: input not found")
    if single_file:
        _check_file_output(source, output, overwrite=overwrite)
    predict = functools.partial(_predict, model, options=options, progress=progress)
    with ExitStack() as opened:
        inputs = _inputs(source, model, registry, cases, opened=opened)
        if single_file:  # the file itself, renamed into place last, is the record
            sink = writer.file_sink(output)
            return [_announce(predict(item.load(), sink), on_case) for item in inputs]
        _check_unique(inputs, source)
        if writer.needs_series and not all(item.files for item in inputs):
            raise PredictError(
                f"--format {output_format}: INPUT {source} is not a folder of DICOM series, "
                f"and {output_format} output references the series it segments; use another "
                f"--format ({', '.join(n for n in registry.names('writer') if n != output_format)})"
            )

        def prepare() -> None:  # a sink may create OUTPUT's Zarr group, which only one rank may
            run = _run_record(model, output_format, options)
            prepare_output(output, overwrite=overwrite, run=run)
            _folder_sink(output, writer, inputs)

        folder = functools.partial(_folder_sink, output, writer, inputs)
        with _removed_unless_written(output, ranks):
            return _predict_folder(
                inputs,
                output,
                ranks,
                prepare=prepare,
                make_sink=folder,
                predict=predict,
                on_case=on_case,
                labels=_label_map(model),
            )


@contextmanager
def _removed_unless_written(output: Path, ranks: Ranks) -> Iterator[None]:
    """Remove OUTPUT again when this run made it and was refused (a DuosegError: an
    option that fits no case, a bad input) before finishing any case: a refused run
    leaves nothing, and its record would refuse the corrected command. An interrupted
    run (Ctrl-C, a full disk) keeps its partial case to resume; under torchrun another
    rank may be writing, so nothing is removed there."""
    made = not output.exists()
    try:
        yield
    except DuosegError:
        reports = output / REPORTS
        finished = reports.is_dir() and any(reports.iterdir())
        if made and not finished and not ranks.distributed and output.is_dir():
            shutil.rmtree(output)
        raise


@contextmanager
def input_case(source: Path, model: Model, registry: Registry) -> Iterator[CacheCase]:
    """The one case of INPUT ``source`` (a NIfTI file, a folder of one image or one DICOM
    series, a cache of one case), prepared for ``model``; a cache stays open meanwhile."""
    if not source.exists():
        raise PredictError(f"{source}: input not found")
    with ExitStack() as opened:
        inputs = _inputs(source, model, registry, None, opened=opened)
        if len(inputs) != 1:
            raise PredictError(
                f"{source}: holds {len(inputs)} cases ({', '.join(i.case_id for i in inputs)}); "
                "segment takes one image (predict takes many)"
            )
        yield inputs[0].load()


def _predict_folder(
    inputs: list[Input],
    output: Path,
    ranks: Ranks,
    *,
    prepare: Callable[[], None],
    make_sink: Callable[[], FolderSink],
    predict: Predict,
    on_case: Callable[[Report], None] | None,
    labels: dict[str, int],
) -> list[Report]:
    """Each rank predicts its share of ``inputs`` into the folder OUTPUT, skipping the
    cases an interrupted run finished; rank 0 writes the completion record last."""
    with process_group(ranks):
        ids = [item.case_id for item in inputs]
        check_same_cases(ranks, ids, output)  # each rank takes its share by position
        rank0_first(ranks, prepare)
        sink = make_sink()
        reports = [_report(item, output, sink, predict, on_case) for item in shard(inputs, ranks)]
        everyone = {r.case_id: r for r in gather_reports(ranks, reports)}
        if ranks.rank == 0:
            missing = [c for c in ids if c not in everyone]
            if missing:
                raise PredictError(f"{output}: no rank reported case(s) {missing}")
            finish_output(output, ids, [dataclasses.asdict(everyone[c]) for c in ids], labels)
            clear_reports(output)  # only now: a kill before the record loses no report
    return reports


def _report(item: Input, output: Path, sink: FolderSink, predict: Predict,
            on_case: Callable[[Report], None] | None) -> Report:  # fmt: skip
    """A case's saved report if an earlier run of this prediction finished it (its
    output is there too); else the report of predicting it now."""
    report = saved_report(output, item.case_id) if sink.finished(item.case_id) else None
    if report is None:  # saved only once the sink has finished the case
        report = _announce(save_report(output, predict(item.load(), sink)), on_case)
    return report


def _run_record(model: Model, output_format: str, options: Options) -> dict[str, Any]:
    """What makes a rerun into OUTPUT the same prediction (MARKER records it): the
    format, the checkpoint's bytes and the options that change the labels."""
    checkpoint = None if model.checkpoint is None else file_checksum(model.checkpoint)
    return {
        "format": output_format,
        "checkpoint_sha256": checkpoint,
        "lcc": options.lcc_per_class,
        "probabilities": options.probabilities,
        "precision": options.precision,
        "method": dict(options.method),
    }


def _checked_request(
    output: Path, requested: str | None, options: Options, registry: Registry
) -> tuple[tuple[str, Writer], Ranks]:
    """The output format and the ranks, once OUTPUT is known to fit both."""
    chosen = _output_format(output, requested, options, registry)
    ranks = Ranks.from_environment()
    if chosen[1].is_file(output) and ranks.distributed:
        raise PredictError(
            f"{output}: a one-file OUTPUT holds one case, which one rank predicts, but "
            f"there are {ranks.world} ranks (WORLD_SIZE); give a folder or *.zarr OUTPUT"
        )
    return chosen, ranks


def _output_format(
    output: Path, requested: str | None, options: Options, registry: Registry
) -> tuple[str, Writer]:
    """``--format`` (a registered writer), which must fit OUTPUT's name; else the one
    writer that name implies. Refused before OUTPUT is touched: --probabilities for a
    format that has no room."""
    writers: dict[str, Writer] = {}
    for name in registry.names("writer"):
        writers[name] = registry.build("writer", name)
    formats = "; ".join(f"{n}: {w.output_help}" for n, w in writers.items())
    if requested is None:
        implied = [n for n, w in writers.items() if w.implied_by(output)]
        if len(implied) != 1:
            which = f"formats {implied} all claim it" if implied else "no format claims it"
            raise PredictError(f"{output}: {which}; give --format ({formats})")
        requested = implied[0]
    elif requested not in writers:
        registry.build("writer", requested)  # the registry's error: what exists, what is close
    if not writers[requested].fits(output):
        raise PredictError(
            f"{output}: --format {requested} does not fit OUTPUT; formats: {formats}"
        )
    if options.probabilities and not writers[requested].probabilities:
        storing = ", ".join(f"{n}: {w.output_help}" for n, w in writers.items() if w.probabilities)
        raise PredictError(
            f"{output}: --probabilities needs a format that stores them ({storing}); "
            f"{requested} output holds labels only"
        )
    return requested, writers[requested]


def _folder_sink(output: Path, writer: Writer, inputs: list[Input]) -> FolderSink:
    return writer.sink(output, {item.case_id: item.files for item in inputs})


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
    """A one-file OUTPUT: one input image file, and no file replaced unless asked."""
    if source.is_dir():
        raise PredictError(
            f"{output}: a one-file OUTPUT is one label file for one input image, but INPUT "
            f"{source} is a folder (of images, or a cache); give a folder OUTPUT"
        )
    if output.is_dir():
        raise PredictError(
            f"{output}: OUTPUT names a file but is an existing folder; refusing to replace it"
        )
    if output.exists() and not overwrite:
        raise PredictError(f"{output}: output file exists; pass --overwrite")
    output.parent.mkdir(parents=True, exist_ok=True)
