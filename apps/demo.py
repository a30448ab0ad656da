"""``duoseg demo``: the paper's comparison, end to end, on the built-in phantoms.

Phantom CTs (train / validation / test) -> a Zarr cache -> ``wang2018``, the strong 2 mm
baseline and (on GPU) the full-resolution sliding-window U-Net, each trained for the
same wall-clock -> the test cases predicted at full resolution by Net1 alone, Net1 +
Net2 and the others -> Dice, Jaccard, ASD and HD95 beside the 2 mm path's ceiling ->
``report.md`` with the paper's Tables 2-3, overlays as in its Fig. 2, the training
curves and the timings; each trained model is also exported as ``models/<name>.zip``.
Nothing is downloaded: the phantoms are the data set.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import duoseg
import numpy as np
import torch
from duoseg.core.config import check_components, load_config, resolve_method
from duoseg.core.data.cache_build import build_cache
from duoseg.core.errors import DuosegError
from duoseg.core.inference.evaluate import WHOLE, bounding_box, ceiling, evaluate
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.score_files import class_names, overlays, save_json
from duoseg.core.inference.streaming import Options, Report
from duoseg.core.records.config import ExperimentConfig
from duoseg.core.records.preprocessing import DEFAULT_LEVELS, Level
from duoseg.core.registry import Registry
from duoseg.core.training.trainer import Trainer, config_as_dict
from duoseg.phantoms import PROTOCOLS, Protocol, write_phantoms


@dataclass(frozen=True)
class Preset:
    """How big the demo is: the phantoms' grid, case counts and the training budget.

    Every model trains for the same ``seconds`` of wall-clock (``train.seconds``): the
    comparison is at equal training time, not equal iterations."""

    name: str
    protocol: Protocol  # the phantoms' grid (voxels, spacing: so the field of view)
    train_cases: int
    test_cases: int
    seconds: float  # training wall-clock per model
    size: tuple[int, int, int] | None = None  # other voxels over the protocol's view
    two_stage: tuple[str, ...] = ()  # config overrides of demo_two_stage.toml
    baseline: tuple[str, ...] = ()  # ... of demo_baseline.toml
    fullres: tuple[str, ...] | None = None  # ... of demo_fullres.toml; None: not trained
    compares: bool = True  # whether its budget is meant to reproduce the paper's finding
    workers: int = 1  # processes writing phantoms and scoring test cases

    @property
    def runs(self) -> dict[str, tuple[str, ...]]:
        """The configs trained (``demo_<name>.toml``) and their overrides."""
        runs = {"two_stage": self.two_stage, "baseline": self.baseline}
        if self.fullres is not None:
            runs["fullres"] = self.fullres
        return runs


# The CPU demo's grid: the CT protocol's whole chest (512 x 512 x 256 at 0.40-0.48 mm,
# 0.55-0.70 mm slices; the patient off-centre), as a scanner writes it, with Net1 on a
# 6 mm grid: on two cores it localises the heart as well as at 3 mm in less than half
# the time (docs/whole_scans.md), which leaves Net2 most of the budget.
PRESETS = {
    "cpu": Preset(
        "cpu",
        PROTOCOLS["ct"],
        train_cases=6,
        test_cases=2,
        seconds=240.0,
        workers=2,
    ),
    "quick": Preset(
        "quick",
        PROTOCOLS["ct"],
        train_cases=3,
        test_cases=1,
        seconds=20.0,
        size=(96, 96, 64),
        two_stage=("schedule.params.subvolume_sizes=[32]", "schedule.params.stack_crop=[64, 64]"),
        baseline=("schedule.params.subvolume_sizes=[24, 32]",),
        compares=False,
    ),
    "cuda": Preset(
        "cuda",
        PROTOCOLS["ct"],
        train_cases=10,
        test_cases=3,
        seconds=70.0,
        two_stage=(
            "schedule.params.iterations=[600, 4000, 100, 15000]",  # caps a GPU can reach
            "method.params.coarse_mm=3.0",  # the paper's Net1 grid
            "schedule.params.batch_size=4",
            "schedule.params.stack_crop=[256, 256]",
            "train.workers=8",
        ),
        baseline=("schedule.params.batch_size=4", "train.workers=8"),
        fullres=("schedule.params.batch_size=2", "train.workers=8"),
        workers=16,
    ),
}
METHODS = {  # report name -> (run, prediction options)
    "Net1": ("two_stage", Options(method={"net1_only": True})),
    "Net1+Net2": ("two_stage", Options()),
    "Baseline": ("baseline", Options()),
    "Full-res U-Net": ("fullres", Options()),
}
CEILING_MM = 2.0  # the baseline's grid: the report's ceiling column


def preset_for(*, quick: bool, device: str) -> Preset:
    if quick:
        return PRESETS["quick"]
    return PRESETS["cuda" if device.startswith("cuda") else "cpu"]


@dataclass(frozen=True)
class DemoData:
    """Where a demo's phantoms live: NIfTI sources, the training cache, the split."""

    train_source: Path  # training cases and the validation case
    test_source: Path  # held-out cases, never in the cache
    cache: Path
    validation: str


def data_layout(root: Path, preset: Preset) -> DemoData:
    """Where :func:`prepare_data` puts the preset's data under ``root``."""
    return DemoData(root / "train", root / "test", root / "cache.zarr",
                    f"ct_train_{1001 + preset.train_cases}")  # fmt: skip


def prepare_data(root: Path, preset: Preset, registry: Registry) -> DemoData:
    """Write the preset's phantoms under ``root`` and build the training cache."""
    data = data_layout(root, preset)
    grid = partial(write_phantoms, size=preset.size, protocol=preset.protocol,
                   workers=preset.workers, progress=True)  # fmt: skip
    grid(data.train_source, cases=preset.train_cases + 1)
    grid(data.test_source, cases=preset.test_cases, first=preset.train_cases + 1)
    importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
    build_cache(data.train_source, data.cache, importer=importer, store=store, progress=True,
                levels=levels_needed(preset, registry))  # fmt: skip
    return data


def levels_needed(preset: Preset, registry: Registry) -> list[Level]:
    """The cache levels the preset's methods declare (the baseline's 2 mm grid), with
    the coarse level at its default where no method pins it."""
    targets = {level.name: level for level in DEFAULT_LEVELS}
    for name, overrides in preset.runs.items():
        config, source = _config(name, overrides)
        method, _ = resolve_method(config, registry, source=source)
        targets.update((level.name, level) for level in method.levels(config.train))
    return list(targets.values())


def _config(name: str, settings: Iterable[str]) -> tuple[ExperimentConfig, str]:
    """The shipped config ``demo_<name>.toml`` with ``settings``, and its name for messages."""
    with resources.as_file(resources.files(__package__) / "configs" / f"demo_{name}.toml") as path:
        return load_config(path, list(settings)), f"duoseg/apps/configs/{path.name}"


def train(
    name: str,
    data: DemoData,
    run: Path,
    overrides: Iterable[str] = (),
    *,
    device: str,
    registry: Registry,
) -> Path:
    """Train the shipped config ``demo_<name>.toml`` on ``data`` into ``run``."""
    settings = [
        f"data.cache={json.dumps(str(data.cache))}",
        f"data.validation_cases=[{json.dumps(data.validation)}]",
        f"train.device={json.dumps(device)}",
        *overrides,
    ]
    config, source = _config(name, settings)
    check_components(config, registry, source=source)
    Trainer(config, registry, run, source=source, raw_config=config_as_dict(config)).run()
    return run


def export_model(run: Path, target: Path, preset: Preset, registry: Registry) -> Path:
    """``run``'s model as a package (``duoseg predict MODEL.zip ...`` takes it)."""
    description = (
        f"duoseg demo ({preset.name} preset): {run.name}, trained {preset.seconds:g} s on "
        f"{preset.train_cases} phantom CTs; a demonstration on synthetic data, not for use"
    )
    return duoseg.export(run, target, description=description, registry=registry)


def predict_test_cases(
    run: Path, data: DemoData, folder: Path, options: Options, *, device: str, registry: Registry
) -> list[Report]:
    """Predict the test cases into ``folder`` (NIfTI, the sources' grids)."""
    return predict_paths(run, data.test_source, folder, options=options, device=device,
                         cases=None, overwrite=False, registry=registry, progress=True)  # fmt: skip


def tile_rows(reports: list[Report], truth: Path, registry: Registry) -> list[dict[str, Any]]:
    """Each case's labelled region (Net1's tile): its share of the volume and each
    structure's share of voxels inside it, counted on the case's own label file; beside
    it the share of the labels' own box, the least any tile holding the heart covers."""
    importer = registry.build("importer", "mmwhs")
    pairs = {p.case_id: p for p in importer.discover(truth)}
    rows = []
    for report in reports:
        case = importer.load(pairs[report.case_id])
        assert case.label is not None  # the mmwhs importer requires labels
        classes = len(case.class_names)
        total = np.bincount(case.label.ravel(), minlength=classes)
        box = tuple(slice(low, high) for low, high in report.roi)
        inside = np.bincount(case.label[box].ravel(), minlength=classes)
        recall = {name: float(inside[c] / total[c])
                  for c, name in enumerate(case.class_names) if c and total[c]}  # fmt: skip
        rows.append({"case": report.case_id, "fraction": report.roi_fraction, "recall": recall,
                     "labels_box": _box_fraction(case.label > 0)})  # fmt: skip
    return rows


def _box_fraction(mask: np.ndarray) -> float:
    """The share of the volume inside ``mask``'s bounding box."""
    sides = [b.stop - b.start for b in bounding_box(mask)]
    return float(np.prod(sides) / mask.size)


def predict_and_evaluate(
    run: Path, data: DemoData, folder: Path, options: Options, *, device: str, registry: Registry
) -> dict[str, Any]:
    """Predict the test cases into ``folder``; their table against the ground truth."""
    predict_test_cases(run, data, folder, options, device=device, registry=registry)
    return evaluate(folder, data.test_source, registry)


def _scores(
    predictions: dict[str, Path], truth: Path, registry: Registry, workers: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every prediction's table and the ceiling's, ``workers`` processes in all: the
    methods side by side (threads that wait on their cases' processes)."""
    per_method = max(1, workers // (len(predictions) + 1))
    with ThreadPoolExecutor(max(1, min(len(predictions), workers // per_method))) as pool:
        jobs = {m: pool.submit(evaluate, folder, truth, registry, workers=per_method)
                for m, folder in predictions.items()}  # fmt: skip
        results = {m: job.result() for m, job in jobs.items()}
    labels = results["Net1+Net2"]["labels"]
    return results, ceiling(truth, registry, CEILING_MM, labels=labels, workers=workers)


def run_demo(out: Path, *, preset: Preset, device: str, registry: Registry) -> Path:
    """Run the whole demo into ``out`` (absent or empty); return the report's path."""
    _check_out(out)
    timings: dict[str, float] = {}
    with _timed(timings, "phantoms + cache build"):
        data = prepare_data(out / "data", preset, registry)
    runs = {}
    for name, overrides in preset.runs.items():
        with _timed(timings, f"train {name}"):
            budget = (f"train.seconds={preset.seconds}", *overrides)
            runs[name] = train(name, data, out / "runs" / name, budget, device=device,
                               registry=registry)  # fmt: skip
        export_model(runs[name], out / "models" / f"{name}.zip", preset, registry)
    predictions, reports = {}, {}
    for method, (run, options) in METHODS.items():
        if run in runs:
            predictions[method] = out / "predictions" / _slug(method)
            with _timed(timings, f"predict {method}"):
                reports[method] = predict_test_cases(
                    runs[run], data, predictions[method], options, device=device,
                    registry=registry,
                )  # fmt: skip
    tiles = tile_rows(reports["Net1+Net2"], data.test_source, registry)
    with _timed(timings, f"evaluate, and the {CEILING_MM:g} mm ceiling"):
        results, bound = _scores(predictions, data.test_source, registry, preset.workers)
    figures = _figures(out, runs, data.test_source, list(results))
    save_json({"preset": preset.name, "results": results, "ceiling": bound, "timings": timings,
               "tiles": tiles}, out / "results.json")  # fmt: skip
    report = out / "report.md"
    report.write_text(
        format_report(
            preset,
            device,
            results=results,
            timings=timings,
            figures=figures,
            bound=bound,
            tiles=tiles,
        )
    )
    return report


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DuosegError(f"{out}: demo output folder must be absent or empty (pass --out DIR)")
    out.mkdir(parents=True, exist_ok=True)


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[phase] = time.perf_counter() - start


def _slug(method: str) -> str:
    return method.lower().replace("+", "_").replace(" ", "_")


def _figures(
    out: Path, runs: dict[str, Path], test_source: Path, methods: list[str]
) -> dict[str, Path]:
    """The overlay of the first test case and each run's training curves."""
    truth = sorted(test_source.glob("*_label.nii.gz"))[0]
    case = truth.name.removesuffix("_label.nii.gz")
    predictions = {m: out / "predictions" / _slug(m) / truth.name for m in methods}
    figures = {
        "overlay": overlays(
            truth,
            predictions,
            out / "figures" / f"{case}_overlay.png",
            image=test_source / f"{case}_image.nii.gz",
            planes=("axial", "coronal"),
        )
    }
    for name, run in runs.items():
        for curve in ("loss", "validation"):
            if (run / f"{curve}.png").exists():
                target = out / "figures" / f"{name}_{curve}.png"
                shutil.copyfile(run / f"{curve}.png", target)
                figures[f"{name}_{curve}"] = target
    return figures


def mean_dice(result: dict[str, Any]) -> float:
    """Mean Dice over the result's classes (the whole foreground excluded)."""
    classes = class_names(result)
    return float(sum(result["table"]["dice"][s]["mean"] for s in classes) / len(classes))


def finding(results: dict[str, Any]) -> dict[str, tuple[float, float, bool]]:
    """Net1+Net2 against the baseline on mean Dice and on the myocardium's Dice."""
    two_stage, baseline = results["Net1+Net2"], results["Baseline"]
    scores = {
        "mean": (mean_dice(two_stage), mean_dice(baseline)),
        "Myo": (
            two_stage["table"]["dice"]["Myo"]["mean"],
            baseline["table"]["dice"]["Myo"]["mean"],
        ),
    }
    return {key: (ours, theirs, ours > theirs) for key, (ours, theirs) in scores.items()}


def format_report(
    preset: Preset,
    device: str,
    *,
    results: dict[str, Any],
    timings: dict[str, float],
    figures: dict[str, Path],
    bound: dict[str, Any],
    tiles: list[dict[str, Any]],
) -> str:
    outcome = finding(results)
    reproduced = all(better for _, _, better in outcome.values())
    verdict = (
        ("**reproduced**" if reproduced else "**not reproduced**")
        + f": Net1+Net2 mean Dice {outcome['mean'][0]:.4f} vs baseline {outcome['mean'][1]:.4f}; "
        + (f"myocardium {outcome['Myo'][0]:.4f} vs {outcome['Myo'][1]:.4f}.")
    )
    if not preset.compares:
        verdict = "not assessed: the quick preset is a smoke run, too short to compare models."
    grid = preset.protocol
    voxels = preset.size or grid.size
    spacing = (
        f"{grid.in_plane[0]}-{grid.in_plane[1]} mm in-plane, {grid.slices[0]}-{grid.slices[1]} "
        "mm slices"
        if preset.size is None
        else f"a {' x '.join(f'{f:.0f}' for f in grid.fov)} mm field of view"
    )
    lines = [
        "# duoseg demo report",
        "",
        f"Preset `{preset.name}` on {device} ({_machine(device)}): "
        f"{preset.train_cases} training, 1 validation and {preset.test_cases} test phantom CTs "
        f"of {' x '.join(map(str, voxels))} voxels ({spacing}). Every model trained for "
        f"{preset.seconds:g} s of wall-clock (`train.seconds`).",
        "",
        f"The paper's finding (Net1+Net2 better than the 3D U-Net baseline on mean Dice and "
        f"on the myocardium): {verdict}",
        "",
        f"The ceiling column is the ground truth itself taken to {CEILING_MM:g} mm and back "
        "(2nd-order B-splines, argmax): the best any model predicting on the baseline's grid "
        "can score on these cases.",
        "",
        "## Dice and Jaccard (mean ± sd over the test cases; the paper's Tables 2-3)",
        "",
        "± is the population standard deviation over the test cases (ddof 0).",
        "",
        *_score_table(results, ("dice", "jaccard"), bound),
        "",
        "## Surface distances in mm (mean ± sd; inf: a structure missed in some case)",
        "",
        "HD95 is MONAI's (`compute_hausdorff_distance(percentile=95)`): the larger of the two "
        "directed 95th-percentile surface distances. medpy's `hd95` pools both directions' "
        "distances before the percentile and reads lower (up to 17% on these phantoms).",
        "",
        *_score_table(results, ("asd", "hd95"), bound),
        "",
        "## Net1's tile (no box given)",
        "",
        "The region Net1+Net2 labelled on each test case: Net1's dynamic tile, its share of "
        "the volume, and each structure's share of voxels inside it (below 100%: the tile "
        "cut it); the labels' own box (no margin) is the least a tile holding the whole "
        "heart can cover.",
        "",
        "| case | tile, % of the volume | labels' box, % | least recall % | recall % per "
        "structure |",
        "|---|---|---|---|---|",
        *[_tile_row(row) for row in tiles],
        "",
        "## Figures",
        "",
    ]
    for key, path in figures.items():
        lines += [f"![{key}]({path.relative_to(path.parents[1]).as_posix()})", ""]
    lines += ["## Timings", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {phase} | {seconds:.1f} |" for phase, seconds in timings.items()]
    lines += [f"| **total** | {sum(timings.values()):.1f} |", ""]
    return "\n".join(lines)


def _score_table(
    results: dict[str, Any], metrics: tuple[str, ...], bound: dict[str, Any]
) -> list[str]:
    names = {"dice": "Dice", "jaccard": "Jaccard", "asd": "ASD", "hd95": "HD95"}
    columns = {**results, f"{CEILING_MM:g} mm ceiling": bound}
    header = [f"{names[m]} {method}" for m in metrics for method in columns]
    rows = ["| structure | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    first = next(iter(results.values()))
    several = len(first["cases"]) > 1
    for structure in [*class_names(first), WHOLE]:
        cells = [_cell(columns[method]["table"][m][structure], m, several) for m in metrics
                 for method in columns]  # fmt: skip
        rows.append(f"| {structure} | " + " | ".join(cells) + " |")
    if "dice" in metrics:
        means = [f"{mean_dice(columns[method]):.4f}" for method in columns]
        label = f"mean of {len(class_names(first))} (Dice)"
        rows.append(f"| {label} | " + " | ".join(means) + " |" + " |" * (len(header) - len(means)))
    return rows


def _cell(cell: dict[str, float], metric: str, several: bool) -> str:
    """``mean ± sd`` (sd only over several cases); ``inf``: a structure missed entirely."""
    mean, sd = cell["mean"], cell["sd"]
    if math.isnan(mean):
        return "-"
    digits = 4 if metric in ("dice", "jaccard") else 2
    return f"{mean:.{digits}f}" + (f" ± {sd:.2f}" if several and math.isfinite(mean) else "")


def _tile_row(row: dict[str, Any]) -> str:
    recall = row["recall"]
    least = min(recall, key=recall.get)
    each = ", ".join(f"{name} {100 * r:.2f}" for name, r in recall.items())
    return (f"| {row['case']} | {100 * row['fraction']:.1f} | {100 * row['labels_box']:.1f} | "
            f"{100 * recall[least]:.2f} ({least}) | {each} |")  # fmt: skip


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
