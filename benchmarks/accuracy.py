"""Accuracy and speed on whole-chest phantoms at equal training time, over seeds.

    python -m benchmarks.accuracy OUT [--seconds 240] [--seeds 0 1 2]
        [--models two_stage baseline fullres monai] [--train 8] [--test 3]

Writes ``--train`` + 1 (validation) + ``--test`` whole-chest phantoms at the CT
protocol's voxels (512 x 512 x 256 at 0.40-0.48 mm, patients off-centre) under
``OUT/data`` with their caches, then trains every model once per seed for ``--seconds``
of wall-clock on the same cache, the validation case deciding each run's checkpoint:

- ``two_stage``: ``wang2018`` (demo_two_stage.toml), Net1's own tile, no box given;
- ``baseline``: the paper's 2 mm 3D U-Net made strong (demo_baseline.toml);
- ``fullres``: nnU-Net's 3d_fullres recipe in duoseg (demo_fullres.toml);
- ``monai``: MONAI's residual UNet with ``sliding_window_inference`` (``peers`` extra).

Each test case is predicted from its cache in a spawned process (seconds and working
memory: :func:`benchmarks.memory.measured`), scored against its labels (Dice per
structure, HD95) and, for the two-stage model, its tile's share of the volume and each
structure's recall inside it. The seed-0 models of ``two_stage`` and ``monai`` are also
timed NIfTI to NIfTI as whole processes on the first test case (``speed``). Results are
kept per (model, seed) in ``OUT/results/``: a rerun resumes, and ``OUT/accuracy.md``
gives mean ± sd over seeds (the sd over seeds is the spread a claim must exceed)
beside the 2 mm ceiling.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from duoseg.apps.demo import DemoData, Preset, data_layout, prepare_data, train
from duoseg.core import Registry, load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.inference.ceiling import round_trip
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.phantoms import PROTOCOLS

from benchmarks.memory import measured, spawned
from benchmarks.peer_monai_predict import NETWORK, load_network, segment

MODELS = ("two_stage", "baseline", "fullres", "monai")
CEILING_MM = 2.0
HERE = Path(__file__).parent
Trained = tuple[str, Path, dict[str, Any]]  # kind ("duoseg", "monai"), weights, figures


def whole_scan_data(
    root: Path, *, train_cases: int, test_cases: int, registry: Registry
) -> tuple[DemoData, Path]:
    """Whole-chest phantoms under ``root`` (made once), their training and test caches;
    the test cache holds the training cache's levels (the models read both alike)."""
    preset = Preset("accuracy", PROTOCOLS["ct"], train_cases=train_cases, test_cases=test_cases,
                    seconds=0.0, workers=2)  # fmt: skip
    data = data_layout(root, preset)
    if not data.cache.exists():
        data = prepare_data(root, preset, registry)
    test_cache = root / "test.zarr"
    if not test_cache.exists():
        with open_cache(data.cache, registry) as cache:
            levels = cache.preprocessing.levels
        importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
        build_cache(data.test_source, test_cache, importer=importer, store=store, levels=levels)
    return data, test_cache


def fit_duoseg(
    config: str, data: DemoData, out: Path, *, seed: int, seconds: float, registry: Registry
) -> Trained:
    """``demo_<config>.toml`` trained for ``seconds`` with ``seed``."""
    start = time.perf_counter()
    run = train(config, data, out, [f"seed={seed}", f"train.seconds={seconds}"], device="cpu",
                registry=registry)  # fmt: skip
    took = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    iterations = sum(1 for r in rows if "loss" in r)
    return "duoseg", run, {"train_seconds": took, "iterations": iterations}


def fit_monai(
    data: DemoData, out: Path, *, seed: int, seconds: float, registry: Registry
) -> Trained:
    """MONAI's plain recipe: UNet 8-64, one residual unit, instance norm, Dice + CE, Adam
    3e-3, class-balanced full-resolution patches (a third uniform) from the same cache."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(**NETWORK)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    sampler = registry.build("sampler", "class_balanced", sizes=[80, 96], batch_size=2,
                             uniform_fraction=0.33, seed=seed)  # fmt: skip
    cases = [c for c in open_cache(data.cache, registry).cases() if c != data.validation]
    dataset = SampleDataset(data.cache, sampler, length=10**6, cases=cases)
    net.train()
    start, iterations = time.perf_counter(), 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=2):
        optimiser.zero_grad()
        loss(net(batch["image"]), batch["label"][:, None]).backward()
        optimiser.step()
        iterations += 1
        if time.perf_counter() - start >= seconds:
            break
    took = time.perf_counter() - start
    weights = out / "monai.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    return "monai", weights, {"train_seconds": took, "iterations": iterations}


def predict_in_own_process(
    kind: str, weights: Path, cache: Path, case_id: str, options: Options | None = None
) -> tuple[tuple[np.ndarray, dict[str, Any]], float, float]:
    """(Labels, details), seconds and working memory (MiB above the RSS once the model
    and case are loaded) of one prediction from the cache: run it through
    :func:`spawned`. The details hold the two-stage model's tile and its recall."""
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
        return sink.labels, {"phases_s": report.seconds, "roi": report.roi,
                             "roi_fraction": report.roi_fraction,
                             "roi_recall": report.roi_recall}  # fmt: skip

    return measured(predict)


def score(kind: str, weights: Path, test_cache: Path, registry: Registry) -> dict[str, Any]:
    """Every test case predicted with the model's own output and scored."""
    dice, hd95 = registry.build("metric", "dice"), registry.build("metric", "hd95")
    cache = open_cache(test_cache, registry)
    cases = []
    for case_id in cache.cases():
        case = cache.case(case_id)
        (labels, details), seconds, memory = spawned(predict_in_own_process, kind, weights,
                                                     test_cache, case_id)  # fmt: skip
        truth = case.label[...]
        names = case.meta.class_names[1:]
        scores = dice.per_class(labels, truth, len(names) + 1)
        cases.append({
            "case": case_id, "seconds": seconds, "working_mib": memory,
            "dice": {n: 0.0 if s is None else s for n, s in zip(names, scores, strict=True)},
            "hd95": {n: hd95(labels == c, truth == c, case.meta.spacing)
                     for c, n in enumerate(names, 1)},
            **{k: details[k] for k in ("roi_fraction", "roi_recall") if k in details},
        })  # fmt: skip
    return {"cases": cases}


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


def nifti_command(kind: str, weights: Path, image: Path, out: Path) -> list[str]:
    """The whole process a user runs: ``duoseg predict`` or the MONAI script."""
    if kind == "monai":
        return [sys.executable, str(HERE / "peer_monai_predict.py"), str(weights), str(image),
                str(out)]  # fmt: skip
    return [sys.executable, "-m", "duoseg.apps.cli", "predict", str(weights), str(image), str(out)]


def ceiling(test_cache: Path, registry: Registry) -> dict[str, float]:
    """The test cases' own labels to 2 mm and back: the best a 2 mm model can score."""
    cache = open_cache(test_cache, registry)
    per_class = registry.build("metric", "dice").per_class
    dice: dict[str, list[float]] = {}
    for case_id in cache.cases():
        case = cache.case(case_id)
        truth = case.label[...]
        classes = len(case.meta.class_names)
        back = round_trip(truth, case.meta.spacing, CEILING_MM, classes)
        for name, s in zip(case.meta.class_names[1:], per_class(back, truth, classes),
                           strict=True):  # fmt: skip
            dice.setdefault(name, []).append(1.0 if s is None else s)
    return {s: float(np.mean(v)) for s, v in dice.items()}


def run_once(path: Path, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``job()``'s result, kept in ``path``: a rerun reads it instead."""
    if path.exists():
        return dict(json.loads(path.read_text()))
    result = job()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def model_result(
    model: str,
    seed: int,
    *,
    data: DemoData,
    test_cache: Path,
    out: Path,
    seconds: float,
    registry: Registry,
) -> dict[str, Any]:
    """``model`` trained with ``seed`` for ``seconds``, then scored on the test cache."""
    run = out / "runs" / f"{model}_s{seed}"
    fit = partial(fit_monai) if model == "monai" else partial(fit_duoseg, model)
    kind, weights, training = fit(data, run, seed=seed, seconds=seconds, registry=registry)
    return {"model": model, "seed": seed, "weights": str(weights), "kind": kind, **training,
            **score(kind, weights, test_cache, registry)}  # fmt: skip


def speed(results: dict[tuple[str, int], dict[str, Any]], data: DemoData,
          out: Path) -> dict[str, Any]:  # fmt: skip
    """The seed-0 two-stage and MONAI models NIfTI to NIfTI on the first test case."""
    image = sorted(data.test_source.glob("*_image.nii.gz"))[0]
    rows = {}
    for model in ("two_stage", "monai"):
        if (model, 0) in results:
            result = results[(model, 0)]
            target = out / "speed" / f"{model}.nii.gz"
            target.unlink(missing_ok=True)
            seconds, peak = whole_process(nifti_command(result["kind"], Path(result["weights"]),
                                                        image, target))  # fmt: skip
            rows[model] = {"case": image.name, "seconds": seconds, "peak_rss_mib": peak}
    return rows


def summary(results: dict[tuple[str, int], dict[str, Any]], bound: dict[str, float],
            speeds: dict[str, Any]) -> str:  # fmt: skip
    """Mean ± sd over seeds of each model's per-seed means over the test cases."""
    names = list(bound)
    lines = ["| model | seeds | iterations | " + " | ".join(names)
             + " | mean Dice | HD95 mm | tile % | least recall % | s/case | MiB |",
             "|---" * (len(names) + 9) + "|"]  # fmt: skip
    for model in MODELS:
        runs = [r for (m, _), r in sorted(results.items()) if m == model]
        if runs:
            lines.append(_model_row(model, runs, names))
    ceilings = " | ".join(f"{bound[n]:.3f}" for n in names)
    lines.append(f"| {CEILING_MM:g} mm ceiling | | | {ceilings} | "
                 f"{np.mean(list(bound.values())):.3f} | | | | | |")  # fmt: skip
    if speeds:
        lines += ["", "| NIfTI to NIfTI, whole process | case | seconds | peak RSS MiB |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {m} | {s['case']} | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} |"
                  for m, s in speeds.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def _model_row(model: str, runs: list[dict[str, Any]], names: list[str]) -> str:
    """One model's row: per structure and mean, mean ± sd over its seeds."""
    cases = [c for r in runs for c in r["cases"]]
    per = {n: [np.mean([c["dice"][n] for c in r["cases"]]) for r in runs] for n in names}
    means = [np.mean([per[n][i] for n in names]) for i in range(len(runs))]
    distances = [d for c in cases for d in c["hd95"].values() if math.isfinite(d)]
    tiles = [c["roi_fraction"] for c in cases if c.get("roi_recall")]
    recalls = [min(c["roi_recall"].values()) for c in cases if c.get("roi_recall")]
    tile = (f"{100 * np.mean(tiles):.1f} ({100 * min(tiles):.1f}-{100 * max(tiles):.1f})"
            if tiles else "-")  # fmt: skip
    recall = f"{100 * min(recalls):.2f}" if recalls else "-"
    cells = " | ".join(f"{np.mean(per[n]):.3f} ± {np.std(per[n]):.3f}" for n in names)
    return (f"| {model} | {len(runs)} | {np.mean([r['iterations'] for r in runs]):.0f} | "
            f"{cells} | **{np.mean(means):.3f} ± {np.std(means):.3f}** | "
            f"{np.mean(distances):.1f} | {tile} | {recall} | "
            f"{np.mean([c['seconds'] for c in cases]):.1f} | "
            f"{max(c['working_mib'] for c in cases):.0f} |")  # fmt: skip


def kept_results(folder: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (model, seed) result under ``folder``, this invocation's and earlier ones'."""
    results = {}
    for path in sorted(folder.glob("*_s*.json")):
        result = json.loads(path.read_text())
        results[(result["model"], int(result["seed"]))] = result
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--test", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("DUOSEG_THREADS", torch.get_num_threads())))
    registry = load_plugins()
    data, test_cache = whole_scan_data(args.out / "data", train_cases=args.train,
                                       test_cases=args.test, registry=registry)  # fmt: skip
    for seed in args.seeds:
        for model in args.models:
            path = args.out / "results" / f"{model}_s{seed}.json"
            job = partial(model_result, model, seed, data=data, test_cache=test_cache,
                          out=args.out, seconds=args.seconds, registry=registry)  # fmt: skip
            run_once(path, job)
            print(f"{model} seed {seed} done", flush=True)
    results = kept_results(args.out / "results")
    bound = run_once(args.out / "results" / "ceiling.json", lambda: ceiling(test_cache, registry))
    speeds = run_once(args.out / "results" / "speed.json", lambda: speed(results, data, args.out))
    (args.out / "accuracy.md").write_text(summary(results, bound, speeds))
    print((args.out / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
