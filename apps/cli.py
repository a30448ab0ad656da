"""The ``duoseg`` command line (DESIGN section 7).

Bad input ends with a one-line ``duoseg: error: ...`` on stderr and exit status 2;
``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duoseg
from duoseg.core.components import KINDS
from duoseg.core.config import apply_override
from duoseg.core.errors import DuosegError
from duoseg.core.registry import load_plugins

if TYPE_CHECKING:
    from duoseg.core.records.preprocessing import Level

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 1  # the disk, permissions: not the input's fault

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duoseg", description="Full-resolution two-stage U-Net segmentation of 3D volumes."
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list the components every plugin supplies")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(run=_plugins)
    _add_phantom(commands)
    _add_cache(commands)
    _add_train(commands)
    _add_predict(commands)
    _add_export(commands)
    _add_evaluate(commands)
    _add_demo(commands)
    return parser


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="Dice, Jaccard, ASD, HD95 against ground truth",
        usage="duoseg evaluate [PRED] GT [--ceiling MM] [options]",
    )
    evaluate.add_argument(
        "paths", type=Path, nargs="+", metavar="PRED GT",
        help="prediction and ground truth (label files or folders); GT alone with --ceiling",
    )  # fmt: skip
    evaluate.add_argument(
        "--ceiling",
        type=float,
        metavar="MM",
        help="also score GT itself taken to MM mm and back (2nd-order B-splines): the best "
        "any model predicting on that grid can do",
    )
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    evaluate.add_argument("--csv", type=Path, metavar="FILE", help="per-case rows as CSV")
    evaluate.add_argument(
        "--workers", type=int, default=1, metavar="N", help="score N cases at a time (processes)"
    )
    evaluate.add_argument("--overlays", type=Path, metavar="DIR", help="PNG overlays per case")
    evaluate.add_argument(
        "--labels",
        metavar="NAME=V,...",
        help="the classes and their label values (default: --run's, else PRED's record)",
    )
    evaluate.add_argument(
        "--run",
        type=Path,
        dest="run_dir",  # args.run is the command
        metavar="RUN_DIR",
        help="take the classes from this run's checkpoint",
    )
    evaluate.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from duoseg.core.inference.evaluate import FROM_TRUTH, ceiling
    from duoseg.core.inference.score_files import format_table, overlays, save_json, write_csv

    labels = _label_map(args.labels).get("labels") if args.labels is not None else None
    if len(args.paths) > 2 or (len(args.paths) == 1 and args.ceiling is None):
        got = " ".join(map(str, args.paths))
        raise DuosegError(f"evaluate takes PRED GT, or GT alone with --ceiling MM; got {got}")
    registry = load_plugins()
    if args.ceiling is not None:
        bound = ceiling(args.paths[-1], registry, args.ceiling, labels=labels, workers=args.workers)
        print(f"ceiling of the {args.ceiling:g} mm path ({args.paths[-1]} to {args.ceiling:g} mm "
              "and back):")  # fmt: skip
        print(format_table(bound))
        if len(args.paths) == 1:
            if args.json:
                save_json(bound, args.json)
            return 0
        print()
    args.prediction, args.truth = args.paths
    result = duoseg.evaluate(args.prediction, args.truth, labels=labels, run=args.run_dir,
                             workers=args.workers, registry=registry).as_dict()  # fmt: skip
    if args.ceiling is not None:
        result["ceiling"] = bound
    if result["label_source"].startswith(FROM_TRUTH):
        print(f"classes: {result['label_source']}", file=sys.stderr)
    print(format_table(result))
    if args.json:
        save_json(result, args.json)
    if args.csv:
        write_csv(result, args.csv)
    if args.overlays:
        for case in result["cases"]:
            pred = (
                args.prediction
                if args.prediction.is_file()
                else next(args.prediction.glob(f"{case}_label.nii*"))
            )
            truth = (
                args.truth if args.truth.is_file() else next(args.truth.glob(f"{case}_label.nii*"))
            )
            image = next(truth.parent.glob(f"{case}_image.nii*"), None)
            overlays(truth, {"prediction": pred}, args.overlays / f"{case}_overlay.png", image,
                     labels=result["labels"])  # fmt: skip
    return 0


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser("predict", help="segment volumes at full resolution")
    predict.add_argument(
        "model", type=Path, metavar="MODEL", help="a run folder or a model package (export)"
    )
    predict.add_argument(
        "input", type=Path, metavar="INPUT", help="NIfTI file or folder, DICOM folder, or cache"
    )
    predict.add_argument(
        "output",
        type=Path,
        metavar="OUTPUT",
        help="file.nii[.gz], folder (NIfTI, or DICOM-SEG with --format dicom-seg) or *.zarr",
    )
    predict.add_argument(
        "--format",
        metavar="WRITER",
        help="output format, a writer plugin (built in: nifti, zarr, dicom-seg; `duoseg "
        "plugins` lists all; default: from OUTPUT); not the store plugin that cache build's "
        "--store names",
    )
    predict.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    predict.add_argument("--case", action="append", help="case id(s) of a cache or DICOM folder")
    predict.add_argument(
        "--probabilities", action="store_true", help="also write probabilities (Zarr)"
    )
    predict.add_argument("--memory-budget", type=float, default=1024.0, metavar="MiB")
    predict.add_argument("--lcc", action="store_true", help="largest component per class")
    for flag, (option, value) in MOVED_TO_METHOD_OPTIONS.items():
        takes = 0 if value else None
        predict.add_argument(flag, nargs=takes, action=_MovedFlag, help=argparse.SUPPRESS,
                             const=(option, value))  # fmt: skip
    predict.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the model's method (TOML value), e.g. threshold=0.3",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace a complete OUTPUT")
    predict.set_defaults(run=_predict)


# Flags of the two-stage model from before methods were plugins, and their new form.
MOVED_TO_METHOD_OPTIONS = {
    "--threshold": ("threshold", None),
    "--margin-mm": ("margin_mm", None),
    "--tta": ("flip_tta", "true"),
    "--net1-only": ("net1_only", "true"),
}


class _MovedFlag(argparse.Action):
    """Refuse a flag that became a method option, showing the new form."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        option, value = self.const
        parser.error(
            f"{option_string} is now an option of the two_stage method: "
            f"--method-option {option}={value if value is not None else values}"
        )


def _predict(args: argparse.Namespace) -> int:
    method: dict[str, Any] = {}
    for option in args.method_option:
        apply_override(method, option, source="--method-option")
    reports = duoseg.predict(
        args.model,
        args.input,
        args.output,
        device=args.device,
        cases=args.case,
        overwrite=args.overwrite,
        output_format=args.format,
        probabilities=args.probabilities,
        memory_budget_mib=args.memory_budget,
        lcc=args.lcc,
        method_options=method,
        progress=True,
    )
    for report in reports:
        print(
            f"{report.case_id}: roi {report.roi} ({report.roi_fraction:.1%} of the volume"
            f"{_least_recall(report.roi_recall)}), slab {report.slab}, "
            f"{report.seconds.get('total', 0):.2f} s"
        )
    return 0


def _least_recall(recall: dict[str, float] | None) -> str:
    """The structure the region cut most, where the case has a label."""
    present = {name: share for name, share in (recall or {}).items() if not math.isnan(share)}
    if not present:
        return ""
    name = min(present, key=present.__getitem__)
    return f"; least recall {present[name]:.2%} ({name})"


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export", help="write a run's model as one package file (weights, records, manifest)"
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument("package", type=Path, metavar="MODEL.zip")
    export.add_argument("--description", help="what the model segments, on what data")
    export.add_argument("--licence", help="the weights' licence, e.g. CC-BY-4.0")
    export.add_argument("--citation", help="how to cite the model")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file")
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    path = duoseg.export(args.run_dir, args.package, description=args.description,
                         licence=args.licence, citation=args.citation,
                         overwrite=args.overwrite)  # fmt: skip
    print(f"{path}: model package of {args.run_dir} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _add_train(commands: Any) -> None:
    train = commands.add_parser("train", help="train a schedule's networks")
    train.add_argument("config", type=Path, metavar="CONFIG")
    train.add_argument("--cache", help="override data.cache")
    train.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value (repeatable)",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="torch deterministic algorithms (see docs/training.md)",
    )
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    run = duoseg.train(args.config, cache=args.cache, out=args.out, overrides=args.set,
                       resume=args.resume, deterministic=args.deterministic)  # fmt: skip
    best = (
        f"best validation Dice {run.best_score:.4f} (end of stage {run.best_stage})"
        if run.best_stage
        else "no validation of the final predictor"
    )
    print(f"{run.path}: finished {run.stages} stage(s); {best}")
    return 0


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="phantoms -> cache -> wang2018 and baseline -> prediction -> report.md"
    )
    demo.add_argument("--out", type=Path, default=Path("duoseg-demo"), metavar="DIR",
                      help="output folder, absent or empty (default ./duoseg-demo)")  # fmt: skip
    demo.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                      help="cuda trains with the bigger cuda budget")  # fmt: skip
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from duoseg.apps.demo import preset_for, run_demo

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DuosegError("--device cuda: torch sees no CUDA device")
    preset = preset_for(quick=args.quick, device=args.device)
    report = run_demo(args.out, preset=preset, device=args.device, registry=load_plugins())
    print(f"report: {report}")
    return 0


def _add_phantom(commands: Any) -> None:
    from duoseg.phantoms import PROTOCOLS, SMALL_SIZE

    protocols = "; ".join(
        f"{m} {' x '.join(map(str, p.size))} at {p.in_plane[0]}-{p.in_plane[1]} mm in-plane"
        for m, p in PROTOCOLS.items()
    )
    phantom = commands.add_parser("phantom", help="write synthetic whole-heart NIfTI cases")
    phantom.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    phantom.add_argument("--cases", type=int, default=4, help="number of cases (default 4)")
    phantom.add_argument("--modality", choices=("ct", "mr"), default="ct")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument(
        "--size",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help=f"voxels per axis over the protocol's field of view (default the protocol's: "
        f"{protocols}); {' '.join(map(str, SMALL_SIZE))} gives small cases for quick runs",
    )
    phantom.set_defaults(run=_phantom)


def _phantom(args: argparse.Namespace) -> int:
    from duoseg.phantoms import write_phantoms

    if args.cases < 1:
        raise DuosegError(f"--cases must be >= 1, got {args.cases}")
    pairs = write_phantoms(
        args.out_dir,
        cases=args.cases,
        modality=args.modality,
        seed=args.seed,
        size=tuple(args.size) if args.size else None,
        progress=True,
    )
    print(f"wrote {len(pairs)} {args.modality} phantom cases to {args.out_dir}")
    return 0


def _add_cache(commands: Any) -> None:
    cache = commands.add_parser("cache", help="build or verify a volume cache")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="import a source folder into a cache")
    build.add_argument("source", type=Path, metavar="SRC_DIR")
    build.add_argument("cache", type=Path, metavar="CACHE")
    build.add_argument("--store", help="store plugin (zarr, hdf5, ...; default zarr)")
    build.add_argument("--format", dest="old_format", help=argparse.SUPPRESS)  # deprecated
    build.add_argument("--importer", default="mmwhs", help="importer plugin (mmwhs, nifti, dicom)")
    build.add_argument("--labels", help="label map for --importer nifti or dicom: NAME=VALUE,...")
    build.add_argument("--codec", default="none", help="chunk codec (zarr: none, lz4, zstd)")
    build.add_argument(
        "--level",
        action="append",
        default=[],
        metavar="NAME=MM",
        help="a resampled level every case gets, repeatable: its name and target spacing in "
        "mm (coarse=3 is always there unless given otherwise: Net1's grid; the resampled "
        "baseline reads baseline=2, its train.baseline_spacing)",
    )
    build.add_argument(
        "--coarse-spacing", type=float, metavar="MM", help="the same as --level coarse=MM"
    )
    build.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=(0.5, 99.5),
        metavar=("LOW", "HIGH"),
        help="intensity percentiles clipped before scaling to [-1, 1]",
    )
    build.set_defaults(run=_cache_build)
    verify = actions.add_parser(
        "verify", help="read every chunk (and check every digest) of a cache or Zarr prediction"
    )
    verify.add_argument("cache", type=Path, metavar="CACHE_OR_PREDICTION")
    verify.set_defaults(run=_cache_verify)


def _label_map(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    labels = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise DuosegError(f"--labels item {item!r} is not NAME=VALUE with an integer VALUE")
        labels[name.strip()] = int(value)
    return {"labels": labels}


def _levels(items: list[str], coarse_mm: float | None) -> list[Level]:
    """``--level NAME=MM`` items and ``--coarse-spacing``: the cache's levels, the coarse
    one at 3 mm unless given."""
    from duoseg.core.records.preprocessing import COARSE, DEFAULT_COARSE_TARGET_MM, Level

    targets = {COARSE: DEFAULT_COARSE_TARGET_MM}
    given: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            target = float(value)
        except ValueError:
            target = math.nan
        if not sep or not math.isfinite(target):
            raise DuosegError(f"--level {item!r} is not NAME=MM (for instance baseline=2)")
        if given.get(name, target) != target:
            raise DuosegError(f"--level {name.strip()} is given twice, at {given[name]:g} and "
                              f"{target:g} mm")  # fmt: skip
        given[name] = target
    if coarse_mm is not None:
        if given.get(COARSE, coarse_mm) != coarse_mm:
            raise DuosegError(f"--coarse-spacing {coarse_mm:g} and --level coarse="
                              f"{given[COARSE]:g} disagree; give one")  # fmt: skip
        given[COARSE] = coarse_mm
    return [Level(name, target) for name, target in {**targets, **given}.items()]


def _store_name(args: argparse.Namespace) -> str:
    if args.old_format is None:
        return str(args.store or "zarr")
    if args.store is not None and args.store != args.old_format:
        raise DuosegError(f"--store {args.store} and --format {args.old_format} disagree; "
                          "give --store only")  # fmt: skip
    print("duoseg: warning: cache build --format is deprecated and will be removed; use "
          f"--store {args.old_format} (--format names predict's output format)",
          file=sys.stderr)  # fmt: skip
    return str(args.old_format)


def _cache_build(args: argparse.Namespace) -> int:
    from duoseg.core.data.cache_build import build_cache, describe_report

    levels = _levels(args.level, args.coarse_spacing)  # before any plugin loads
    registry = load_plugins()
    importer = registry.build("importer", args.importer, **_label_map(args.labels))
    store = registry.build("store", _store_name(args), codec=args.codec)
    report = build_cache(
        args.source,
        args.cache,
        importer=importer,
        store=store,
        levels=levels,
        percentiles=tuple(args.percentiles),
        progress=True,
    )
    print(f"{args.cache}: {describe_report(report)}")
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    from duoseg.core.data.cache import open_cache
    from duoseg.core.inference.outputs import MARKER, PredictionReader

    if (args.cache / MARKER).exists():
        prediction = PredictionReader(args.cache)
        problems, count = prediction.verify(), len(prediction.cases())
    else:
        with open_cache(args.cache) as cache:
            problems = cache.verify()
            count = len(cache.cases())
    for problem in problems:
        print(problem)
    print(f"{args.cache}: {count} cases, {len(problems)} problem(s)")
    return 1 if problems else 0


def _plugins(args: argparse.Namespace) -> int:
    registry = load_plugins()
    rows = [registry.describe(kind, name) for kind in KINDS for name in registry.names(kind)]
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    widths = [max([len(h), *(len(getattr(r, h)) for r in rows)]) for h in ("kind", "name")]
    for row in rows:
        source = f"[{row.distribution} {row.version}]"
        print(f"{row.kind:<{widths[0]}}  {row.name:<{widths[1]}}  {row.summary}  {source}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except DuosegError as exc:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(f"duoseg: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full disk, a read-only folder: the environment, not the input
        if args.verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"duoseg: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT


if __name__ == "__main__":
    sys.exit(main())
