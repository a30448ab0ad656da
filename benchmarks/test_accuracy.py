"""Accuracy at equal training time: duoseg's two-stage model against the strongest
baselines we could build, on the same phantom cache and the same held-out phantoms.

Every model trains for ``SECONDS`` of wall-clock (duoseg: ``train.seconds``; MONAI: the
same loop budget), with the same loss family (Dice + cross-entropy), optimiser (Adam
3e-3) and sampling (class-balanced, a third of the patches uniform):

- ``two_stage``: ``wang2018`` (demo_two_stage.toml);
- ``baseline``: the paper's 2 mm 3D U-Net made strong: residual units, instance norm,
  patches of 96-128 mm (demo_baseline.toml);
- ``fullres``: nnU-Net's 3d_fullres recipe, a residual 3D U-Net on full-resolution
  patches predicting with Gaussian sliding windows (demo_fullres.toml);
- ``monai``: MONAI's residual UNet with ``sliding_window_inference``, when the ``peers``
  extra is installed.

The phantoms are the CPU demo's: cardiac-CT voxels (0.56-0.6 mm in-plane) over a field
of view cropped to the heart. Each model's ``extra_info`` holds its training seconds and
iterations, its inference seconds and working memory per case (peak RSS above the
start, in a spawned process: ``benchmarks.memory.spawned``), and Dice, Myo Dice and HD95
over the test cases; ``test_ceiling`` records the 2 mm path's ceiling on the same cases.

Speed is measured on the same trained models, in the same run (issue 15's comparison):
``test_speed_on_a_512_case`` predicts one 512 x 512 x 256 phantom at the training voxels
over a chest-wide view (in a spawned process: seconds, working memory), and
``test_end_to_end_nifti`` times ``duoseg predict`` against the MONAI script
(``peer_monai_predict.py``) as whole processes, NIfTI in to NIfTI out. Net1 trained
on heart-sized views does not localise the heart in a chest-wide one, so there the
two-stage model gets the heart's box (the labels' box plus its margin) as a fixed ROI,
standing for a Net1 trained on such views; the box Net1 itself finds is recorded, and
the two-stage model is timed with that box too (``roi`` = ``net1``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from duoseg.apps.demo import CPU_VIEW, DemoData, Preset, prepare_data, train
from duoseg.core import Registry, load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.inference.ceiling import round_trip
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.phantoms import Protocol, write_phantoms
from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile
from duoseg.plugins.metrics import Dice

from benchmarks.memory import measured, spawned
from benchmarks.peer_monai_predict import NETWORK, load_network, segment

SECONDS = float(os.environ.get("DUOSEG_ACCURACY_SECONDS", "120"))  # training, per model
PRESET = Preset("accuracy", CPU_VIEW, train_cases=4, test_cases=2, seconds=SECONDS)
Trained = tuple[str, Path, dict[str, Any]]  # kind ("duoseg", "monai"), weights, figures
TRAINED: dict[str, Trained] = {}  # this run's models, for the speed tests
SPEED_VIEW = Protocol((512, 512, 256), CPU_VIEW.in_plane, CPU_VIEW.slices)
HERE = Path(__file__).parent


@dataclass(frozen=True)
class SpeedCase:
    nifti: Path  # the image as a user has it
    cache: Path  # the same case in a one-case cache
    case_id: str
    heart: list[list[int]]  # the labels' box plus Net1's margin: [[z0, z1], [y0, y1], [x0, x1]]


@pytest.fixture(scope="module")
def data(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return prepare_data(tmp_path_factory.mktemp("accuracy"), PRESET, registry)


@pytest.fixture(scope="module")
def test_cache(data: DemoData, registry: Registry) -> Path:
    """The held-out phantoms as one more cache: every model reads the same arrays."""
    target = data.cache.with_name("test.zarr")
    build_cache(data.test_source, target, importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr"))  # fmt: skip
    return target


@pytest.fixture(scope="module")
def speed_case(data: DemoData, registry: Registry) -> SpeedCase:
    folder = data.cache.parent / "speed"
    [(image, _)] = write_phantoms(folder, cases=1, seed=99, protocol=SPEED_VIEW, first=100)
    target = data.cache.with_name("speed.zarr")
    build_cache(folder, target, importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr"))  # fmt: skip
    cache = open_cache(target, registry)
    case = cache.case(cache.cases()[0])
    heart = (case.coarse_label[...] > 0).astype(np.float32)
    box, _ = dynamic_tile(heart, case.meta, TwoStageOptions())
    return SpeedCase(image, target, case.case_id, [[a.start, a.stop] for a in box])


def duoseg_model(config: str) -> Callable[..., Trained]:
    def fit(data: DemoData, out: Path, registry: Registry) -> Trained:
        start = time.perf_counter()
        run = train(config, data, out / config, [f"train.seconds={SECONDS}"], device="cpu",
                    registry=registry)  # fmt: skip
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        iterations = sum(1 for r in rows if "loss" in r)
        return "duoseg", run, {"train_seconds": seconds, "iterations": iterations}

    return fit


def monai_unet(data: DemoData, out: Path, registry: Registry) -> Trained:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(**NETWORK)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    sampler = registry.build("sampler", "class_balanced", sizes=[80, 96], batch_size=2,
                             uniform_fraction=0.33)  # fmt: skip
    cases = [c for c in open_cache(data.cache, registry).cases() if c != data.validation]
    loader = torch.utils.data.DataLoader(
        SampleDataset(data.cache, sampler, length=10**6, cases=cases), batch_size=2
    )
    net.train()
    start, iterations = time.perf_counter(), 0
    for batch in loader:
        optimiser.zero_grad()
        loss(net(batch["image"]), batch["label"][:, None]).backward()
        optimiser.step()
        iterations += 1
        if time.perf_counter() - start >= SECONDS:
            break
    seconds = time.perf_counter() - start
    weights = out / "monai.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    return "monai", weights, {"train_seconds": seconds, "iterations": iterations}


def predict_in_own_process(
    kind: str, weights: Path, cache: Path, case_id: str, options: Options | None = None
) -> tuple[tuple[np.ndarray, dict[str, Any]], float, float]:
    """(Labels, details), seconds and working memory (MiB above the RSS once the model
    and case are loaded) of one prediction: run through :func:`spawned`. ``options``:
    duoseg's; with a fixed ``roi`` the box Net1 finds is a detail."""
    options = options or Options()
    registry = load_plugins(entry_points=False)
    case = open_cache(cache, registry).case(case_id)
    if kind != "duoseg":
        net = load_network(weights)
        return measured(lambda: (segment(net, case.image[...]), {}))
    model = load_model(weights, registry)

    def predict() -> tuple[np.ndarray, dict[str, Any]]:
        sink = MemorySink()
        report = predict_case(model, case, sink, options)
        return sink.labels, {"phases_s": report.seconds, "roi": report.roi}

    (labels, details), seconds, memory = measured(predict)
    if "roi" in options.method:
        # Net1's own box, found after the measurement: run before it, Net1's freed
        # memory stayed in the process and was left out of the working memory.
        region = model.method.predictor(model, case, {}).region
        details["net1_roi"] = [[a.start, a.stop] for a in region]
    return (labels, details), seconds, memory


def whole_process(command: list[str]) -> tuple[float, float]:
    """Wall-clock seconds and peak RSS (MiB; ``ru_maxrss`` in KiB as Linux gives it) of
    ``command`` run to completion."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True,
                            text=True, check=True)  # fmt: skip
    seconds, peak = result.stdout.split()
    return float(seconds), float(peak)


MODELS: dict[str, tuple[Callable[..., Trained], str | None]] = {
    "two_stage": (duoseg_model("two_stage"), None),
    "baseline": (duoseg_model("baseline"), None),
    "fullres": (duoseg_model("fullres"), None),
    "monai": (monai_unet, "monai"),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_accuracy_at_equal_training_time(
    benchmark, registry: Registry, data, test_cache, model
) -> None:
    fit, needs = MODELS[model]
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip("peers extra not installed")
    out = data.cache.parent / "runs"
    kind, weights, training = benchmark.pedantic(fit, args=(data, out, registry), rounds=1,
                                                 iterations=1)  # fmt: skip
    TRAINED[model] = (kind, weights, training)
    hd95 = registry.build("metric", "hd95")
    dice: dict[str, list[float]] = {}
    distances: dict[str, list[float]] = {}
    seconds, working, voxels = [], [], 0
    cache = open_cache(test_cache, registry)
    for case_id in cache.cases():
        case = cache.case(case_id)
        (labels, _), took, memory = spawned(predict_in_own_process, kind, weights, test_cache,
                                            case_id)  # fmt: skip
        seconds.append(took)
        working.append(memory)
        voxels += labels.size
        truth = case.label[...]
        scores = Dice().per_class(labels, truth, len(case.meta.class_names))
        for c, (name, score) in enumerate(zip(case.meta.class_names[1:], scores, strict=True), 1):
            dice.setdefault(name, []).append(0.0 if score is None else score)
            distances.setdefault(name, []).append(hd95(labels == c, truth == c, case.meta.spacing))
    per_structure = {s: float(np.mean(v)) for s, v in dice.items()}
    finite = [d for v in distances.values() for d in v if math.isfinite(d)]
    benchmark.extra_info.update(
        model=model,
        **training,
        mean_dice=float(np.mean(list(per_structure.values()))),
        myo_dice=per_structure["Myo"],
        hd95_mm=float(np.mean(finite)) if finite else float("inf"),
        structures_missed=sum(not math.isfinite(d) for v in distances.values() for d in v),
        dice=per_structure,
        inference_seconds=float(np.mean(seconds)),
        mvoxel_per_s=voxels / sum(seconds) / 1e6,
        working_mib=float(max(working)),
    )


def test_ceiling(benchmark, registry: Registry, test_cache) -> None:
    """The test cases' own labels to 2 mm and back: the best a 2 mm model can score."""
    cache = open_cache(test_cache, registry)

    def ceilings() -> dict[str, float]:
        dice: dict[str, list[float]] = {}
        for case_id in cache.cases():
            case = cache.case(case_id)
            truth = case.label[...]
            classes = len(case.meta.class_names)
            back = round_trip(truth, case.meta.spacing, 2.0, classes)
            scores = Dice().per_class(back, truth, classes)
            for name, score in zip(case.meta.class_names[1:], scores, strict=True):
                dice.setdefault(name, []).append(1.0 if score is None else score)
        return {s: float(np.mean(v)) for s, v in dice.items()}

    per_structure = benchmark.pedantic(ceilings, rounds=1, iterations=1)
    benchmark.extra_info.update(
        model="2 mm ceiling", dice=per_structure, myo_dice=per_structure["Myo"],
        mean_dice=float(np.mean(list(per_structure.values()))),
    )  # fmt: skip


@pytest.mark.parametrize("roi", ["heart_box", "net1"])
@pytest.mark.parametrize("budget", [1024.0, 256.0], ids=["budget1024", "budget256"])
@pytest.mark.parametrize("model", list(MODELS))
def test_speed_on_a_512_case(benchmark, speed_case: SpeedCase, model, budget, roi) -> None:
    """One 512 x 512 x 256 case, cache in, labels in memory: seconds and working memory;
    the two-stage model at the default streaming budget and at 256 MiB, given the
    heart's box as its ROI and (at 256 MiB) with the box its own Net1 finds."""
    if model not in TRAINED:
        pytest.skip(f"{model} was not trained in this run")
    if budget != Options.memory_budget_mib and model != "two_stage":
        pytest.skip("only the two-stage model's slabs follow the budget")
    if roi == "net1" and (model != "two_stage" or budget == Options.memory_budget_mib):
        pytest.skip("Net1's own ROI: the two-stage model at 256 MiB only")
    kind, weights, _ = TRAINED[model]
    method, source = {}, "none"  # the other models have no ROI
    if model == "two_stage":
        method = {"roi": speed_case.heart} if roi == "heart_box" else {}
        source = "labels' box (fixed)" if method else "Net1"
    benchmark.extra_info["roi_source"] = source
    options = Options(memory_budget_mib=budget, method=method)
    job = (predict_in_own_process, kind, weights, speed_case.cache, speed_case.case_id, options)
    (labels, details), seconds, memory = benchmark.pedantic(spawned, args=job, rounds=1,
                                                            iterations=1)  # fmt: skip
    benchmark.extra_info.update(
        model=model, budget_mib=budget, shape=list(labels.shape), seconds=seconds,
        working_mib=memory,
        mvoxel_per_s=labels.size / seconds / 1e6, heart_roi=speed_case.heart, **details,
    )  # fmt: skip


@pytest.mark.parametrize("model", ["two_stage", "monai"])
def test_end_to_end_nifti(benchmark, speed_case: SpeedCase, tmp_path, model) -> None:
    """NIfTI in to NIfTI out as whole processes, 512 x 512 x 256: ``duoseg predict``
    against the MONAI script a user would write (``peer_monai_predict.py``)."""
    if model not in TRAINED:
        pytest.skip(f"{model} was not trained in this run")
    _, weights, _ = TRAINED[model]
    out = tmp_path / "labels.nii.gz"
    if model == "monai":
        command = [sys.executable, str(HERE / "peer_monai_predict.py"), str(weights),
                   str(speed_case.nifti), str(out)]  # fmt: skip
    else:
        command = [sys.executable, "-m", "duoseg.apps.cli", "predict", str(weights),
                   str(speed_case.nifti), str(out), "--method-option",
                   f"roi={json.dumps(speed_case.heart)}"]  # fmt: skip
    seconds, peak = benchmark.pedantic(whole_process, args=(command,), rounds=1, iterations=1)
    benchmark.extra_info.update(model=model, seconds=seconds, peak_rss_mib=peak,
                                voxels=512 * 512 * 256)  # fmt: skip
