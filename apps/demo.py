"""``duoseg demo``: the paper's comparison, end to end, on the built-in phantoms.

Phantom CTs (train / validation / test) -> a Zarr cache -> ``wang2018`` and
``baseline_unet3d`` trained on it -> the test cases predicted at full resolution by
Net1 alone, Net1 + Net2 and the baseline -> Dice, Jaccard, ASD and HD95 ->
``report.md`` with the paper's Tables 2-3, overlays as in its Fig. 2, the training
curves and the timings. Nothing is downloaded: the phantoms are the data set.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from duoseg.apps.phantom import DEFAULT_SIZE, write_phantoms
from duoseg.core.config import check_components, load_config
from duoseg.core.data.cache_build import build_cache
from duoseg.core.errors import DuosegError
from duoseg.core.inference.evaluate import WHOLE, class_names, evaluate, overlays, save_json
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.streaming import Options
from duoseg.core.registry import Registry
from duoseg.core.training.trainer import Trainer, config_as_dict


@dataclass(frozen=True)
class Preset:
    """How big the demo is: phantom size, case counts and training budgets."""

    name: str
    size: tuple[int, int, int]
    train_cases: int
    test_cases: int
    two_stage: tuple[str, ...] = ()  # config overrides of demo_two_stage.toml
    baseline: tuple[str, ...] = ()  # ... and of demo_baseline.toml
    compares: bool = True  # whether its budget is meant to reproduce the paper's finding


PRESETS = {
    "cpu": Preset("cpu", DEFAULT_SIZE, train_cases=7, test_cases=3),
    "quick": Preset(
        "quick",
        (96, 80, 48),
        train_cases=3,
        test_cases=1,
        two_stage=(
            "schedule.params.iterations=[4, 8, 2, 12]",
            "schedule.params.subvolume_sizes=[32]",
            "schedule.params.stack_crop=[64, 64]",
        ),
        baseline=("schedule.params.iterations=20", "schedule.params.subvolume_sizes=[32]"),
        compares=False,
    ),
    "cuda": Preset(
        "cuda",
        DEFAULT_SIZE,
        train_cases=12,
        test_cases=4,
        two_stage=(
            "schedule.params.iterations=[200, 1500, 100, 2000]",
            "schedule.params.batch_size=4",
            "schedule.params.stack_crop=[160, 128]",
            "train.workers=8",
        ),
        baseline=(
            "schedule.params.iterations=3000",
            "schedule.params.batch_size=4",
            "train.workers=8",
        ),
    ),
}
METHODS = {  # report name -> (run, prediction options)
    "Net1": ("two_stage", Options(method={"net1_only": True})),
    "Net1+Net2": ("two_stage", Options()),
    "Baseline": ("baseline", Options()),
}


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


def prepare_data(root: Path, preset: Preset, registry: Registry) -> DemoData:
    """Write the preset's phantoms under ``root`` and build the training cache."""
    data = DemoData(root / "train", root / "test", root / "cache.zarr",
                    f"ct_train_{1001 + preset.train_cases}")  # fmt: skip
    write_phantoms(data.train_source, cases=preset.train_cases + 1, size=preset.size,
                   progress=True)  # fmt: skip
    write_phantoms(data.test_source, cases=preset.test_cases, size=preset.size, progress=True,
                   first=preset.train_cases + 1)  # fmt: skip
    importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
    build_cache(data.train_source, data.cache, importer=importer, store=store, progress=True)
    return data


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
    with resources.as_file(resources.files(__package__) / "configs" / f"demo_{name}.toml") as path:
        config = load_config(path, settings)
        source = f"duoseg/apps/configs/{path.name}"
    check_components(config, registry, source=source)
    Trainer(config, registry, run, source=source, raw_config=config_as_dict(config)).run()
    return run


def predict_and_evaluate(
    run: Path, data: DemoData, folder: Path, options: Options, *, device: str, registry: Registry
) -> dict[str, Any]:
    """Predict the test cases into ``folder``; their table against the ground truth."""
    predict_paths(run, data.test_source, folder, options=options, device=device, cases=None,
                  overwrite=False, registry=registry, progress=True)  # fmt: skip
    return evaluate(folder, data.test_source, registry)


def run_demo(out: Path, *, preset: Preset, device: str, registry: Registry) -> Path:
    """Run the whole demo into ``out`` (absent or empty); return the report's path."""
    _check_out(out)
    timings: dict[str, float] = {}
    with _timed(timings, "phantoms + cache build"):
        data = prepare_data(out / "data", preset, registry)
    runs = {}
    for name, overrides in (("two_stage", preset.two_stage), ("baseline", preset.baseline)):
        with _timed(timings, f"train {name}"):
            runs[name] = train(name, data, out / "runs" / name, overrides, device=device,
                               registry=registry)  # fmt: skip
    results = {}
    for method, (run, options) in METHODS.items():
        with _timed(timings, f"predict + evaluate {method}"):
            results[method] = predict_and_evaluate(
                runs[run], data, out / "predictions" / _slug(method), options, device=device,
                registry=registry,
            )  # fmt: skip
    figures = _figures(out, runs, data.test_source)
    save_json({"preset": preset.name, "results": results, "timings": timings},
              out / "results.json")  # fmt: skip
    report = out / "report.md"
    report.write_text(format_report(preset, device, results, timings, figures))
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
    return method.lower().replace("+", "_")


def _figures(out: Path, runs: dict[str, Path], test_source: Path) -> dict[str, Path]:
    """The overlay of the first test case and each run's training curves."""
    truth = sorted(test_source.glob("*_label.nii.gz"))[0]
    case = truth.name.removesuffix("_label.nii.gz")
    predictions = {m: out / "predictions" / _slug(m) / truth.name for m in METHODS}
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
    results: dict[str, Any],
    timings: dict[str, float],
    figures: dict[str, Path],
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
    lines = [
        "# duoseg demo report",
        "",
        f"Preset `{preset.name}` on {device} ({_machine(device)}): "
        f"{preset.train_cases} training, 1 validation and {preset.test_cases} test phantom CTs "
        f"of {' x '.join(map(str, preset.size))} voxels.",
        "",
        f"The paper's finding (Net1+Net2 better than the 3D U-Net baseline on mean Dice and "
        f"on the myocardium): {verdict}",
        "",
        "## Dice and Jaccard (mean ± sd over the test cases; the paper's Tables 2-3)",
        "",
        *_score_table(results, ("dice", "jaccard")),
        "",
        "## Surface distances in mm (mean ± sd; inf: a structure missed in some case)",
        "",
        *_score_table(results, ("asd", "hd95")),
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


def _score_table(results: dict[str, Any], metrics: tuple[str, ...]) -> list[str]:
    names = {"dice": "Dice", "jaccard": "Jaccard", "asd": "ASD", "hd95": "HD95"}
    header = [f"{names[m]} {method}" for m in metrics for method in results]
    rows = ["| structure | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    first = next(iter(results.values()))
    several = len(first["cases"]) > 1
    for structure in [*class_names(first), WHOLE]:
        cells = [_cell(results[method]["table"][m][structure], m, several) for m in metrics
                 for method in results]  # fmt: skip
        rows.append(f"| {structure} | " + " | ".join(cells) + " |")
    if "dice" in metrics:
        means = [f"{mean_dice(results[method]):.4f}" for method in results]
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


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
