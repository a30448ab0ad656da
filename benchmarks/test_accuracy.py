"""Accuracy and speed at equal training time on whole-chest phantoms, as pytest-benchmark
rows: the same functions as ``python -m benchmarks.accuracy`` (which runs every model
over three seeds and writes the mean ± sd table; docs/benchmarks/accuracy_whole_chest.md).

Every model trains for ``SECONDS`` of wall-clock (duoseg: ``train.seconds``; MONAI: the
same loop budget) on the same cache of whole-chest phantoms (the CT protocol's 512 x 512
x 256 voxels, patients off-centre), with seed ``DUOSEG_ACCURACY_SEEDS`` (default 0), and
predicts the same held-out chests with its own output: the two-stage model with the
tile its own Net1 cuts. ``extra_info`` holds training seconds and iterations, Dice per
structure, HD95, inference seconds and working memory per case (peak RSS above the
start, in a spawned process), and the two-stage tile's share of the volume and least
recall. ``test_speed_on_a_512_case`` times one test chest from its cache at two
streaming budgets; a fixed ROI from the labels' box is a labelled ablation there
(``roi = labels_box``), never the headline. ``test_end_to_end_nifti`` times ``duoseg
predict`` against the MONAI script (``peer_monai_predict.py``) as whole processes,
NIfTI in to NIfTI out.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from duoseg.apps.demo import DemoData
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.inference.streaming import Options
from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile

from benchmarks.accuracy import (
    MODELS,
    ceiling,
    model_result,
    nifti_command,
    predict_in_own_process,
    whole_process,
    whole_scan_data,
)
from benchmarks.memory import spawned

SECONDS = float(os.environ.get("DUOSEG_ACCURACY_SECONDS", "240"))  # training, per model
SEEDS = [int(s) for s in os.environ.get("DUOSEG_ACCURACY_SEEDS", "0").split(",")]
TRAINED: dict[str, dict[str, Any]] = {}  # this run's first seed's models, for the speed tests


@pytest.fixture(scope="module")
def data(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoData, Path]:
    return whole_scan_data(tmp_path_factory.mktemp("accuracy"), train_cases=4, test_cases=2,
                           registry=registry)  # fmt: skip


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A result's means over its test cases, as one benchmark row's figures."""
    cases = result["cases"]
    dice = {n: float(np.mean([c["dice"][n] for c in cases])) for n in cases[0]["dice"]}
    finite = [d for c in cases for d in c["hd95"].values() if math.isfinite(d)]
    rows = {"mean_dice": float(np.mean(list(dice.values()))), "myo_dice": dice["Myo"],
            "dice": dice, "hd95_mm": float(np.mean(finite)) if finite else math.inf,
            "inference_seconds": float(np.mean([c["seconds"] for c in cases])),
            "working_mib": max(c["working_mib"] for c in cases)}  # fmt: skip
    tiles = [c for c in cases if c.get("roi_recall")]
    if tiles:
        rows["tile_fraction"] = max(c["roi_fraction"] for c in tiles)
        rows["least_recall"] = min(min(c["roi_recall"].values()) for c in tiles)
    return rows


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("model", MODELS)
def test_accuracy_at_equal_training_time(benchmark, registry: Registry, data, model, seed) -> None:
    if model == "monai" and importlib.util.find_spec("monai") is None:
        pytest.skip("peers extra not installed")
    demo, test_cache = data
    job = (model, seed)
    settings = {"data": demo, "test_cache": test_cache, "out": demo.cache.parent,
                "seconds": SECONDS, "registry": registry}  # fmt: skip
    result = benchmark.pedantic(model_result, args=job, kwargs=settings, rounds=1, iterations=1)
    if seed == SEEDS[0]:
        TRAINED[model] = result
    benchmark.extra_info.update(model=model, seed=seed, train_seconds=result["train_seconds"],
                                iterations=result["iterations"], **summary(result))  # fmt: skip


def test_ceiling(benchmark, registry: Registry, data) -> None:
    """The test cases' own labels to 2 mm and back: the best a 2 mm model can score."""
    per_structure = benchmark.pedantic(ceiling, args=(data[1], registry), rounds=1, iterations=1)
    benchmark.extra_info.update(
        model="2 mm ceiling", dice=per_structure, myo_dice=per_structure["Myo"],
        mean_dice=float(np.mean(list(per_structure.values()))),
    )  # fmt: skip


def _labels_box(test_cache: Path, case_id: str, registry: Registry) -> list[list[int]]:
    """The heart's box from the case's labels plus Net1's margin: the ablation's ROI."""
    case = open_cache(test_cache, registry).case(case_id)
    heart = (case.coarse_label[...] > 0).astype(np.float32)
    box, _ = dynamic_tile(heart, case.meta, TwoStageOptions())
    return [[a.start, a.stop] for a in box]


SPEED_SETTINGS = {  # (streaming budget MiB, ROI) as benchmark ids
    "budget1024": (1024.0, "own"),
    "budget256": (256.0, "own"),
    "budget256-labels_box": (256.0, "labels_box"),
}


@pytest.mark.parametrize("setting", list(SPEED_SETTINGS))
@pytest.mark.parametrize("model", MODELS)
def test_speed_on_a_512_case(benchmark, registry, data, model, setting) -> None:
    """The first test chest (512 x 512 x 256), cache in, labels in memory: seconds and
    working memory, each model with its own output; the two-stage model also at a
    256 MiB streaming budget and, as an ablation, with the labels' box as a fixed ROI."""
    if model not in TRAINED:
        pytest.skip(f"{model} was not trained in this run")
    if model != "two_stage" and setting != "budget1024":
        pytest.skip("only the two-stage model's slabs follow the budget and take an ROI")
    budget, roi = SPEED_SETTINGS[setting]
    _, test_cache = data
    case_id = open_cache(test_cache, registry).cases()[0]
    method = {"roi": _labels_box(test_cache, case_id, registry)} if roi == "labels_box" else {}
    result = TRAINED[model]
    job = (predict_in_own_process, result["kind"], Path(result["weights"]), test_cache, case_id,
           Options(memory_budget_mib=budget, method=method))  # fmt: skip
    (labels, details), seconds, memory = benchmark.pedantic(spawned, args=job, rounds=1,
                                                            iterations=1)  # fmt: skip
    benchmark.extra_info.update(
        model=model, budget_mib=budget, roi=roi, shape=list(labels.shape), seconds=seconds,
        working_mib=memory, mvoxel_per_s=labels.size / seconds / 1e6,
        roi_fraction=details.get("roi_fraction"),
    )  # fmt: skip


@pytest.mark.parametrize("model", ["two_stage", "monai"])
def test_end_to_end_nifti(benchmark, data, tmp_path, model) -> None:
    """NIfTI in to NIfTI out as whole processes, the first test chest: ``duoseg predict``
    (Net1's own tile) against the MONAI script a user would write."""
    if model not in TRAINED:
        pytest.skip(f"{model} was not trained in this run")
    demo, _ = data
    image = sorted(demo.test_source.glob("*_image.nii.gz"))[0]
    result = TRAINED[model]
    command = nifti_command(result["kind"], Path(result["weights"]), image,
                            tmp_path / "labels.nii.gz")  # fmt: skip
    seconds, peak = benchmark.pedantic(whole_process, args=(command,), rounds=1, iterations=1)
    benchmark.extra_info.update(model=model, seconds=seconds, peak_rss_mib=peak,
                                voxels=512 * 512 * 256, python=sys.version.split()[0])  # fmt: skip
