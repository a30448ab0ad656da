"""Net2's accuracy against its cost: the Pareto study behind the demo's Net2 defaults.

    python -m benchmarks.pareto OUT_DIR [--seconds S] [--variants NAME ...] [--seeds 0 1]
        [--reuse]

Every variant is ``demo_two_stage.toml`` with Net2 overrides, trained for the same
``S`` seconds of wall-clock (all four steps, ``train.seconds``) on the same phantom cache
(the accuracy benchmark's: 4 training cases on the CPU demo's grid). Each is scored on
the **validation** case only: the test cases never choose a default. Cost is Net2's
arithmetic per output voxel (``network_cost``) and its measured voxels/s on a 256^2 ROI
slab of 16 slices (best of 3, CPU threads as set). Writes ``OUT_DIR/pareto.json`` and
``OUT_DIR/pareto.png`` (docs/benchmarks/pareto.md shows the last run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from duoseg.apps.demo import DemoData, Preset, data_layout, prepare_data, train
from duoseg.core import Registry, load_plugins, network_cost
from duoseg.core.data.cache import open_cache
from duoseg.core.inference.model import load_model
from duoseg.core.inference.postprocess import largest_components
from duoseg.core.inference.streaming import Options, predict_labels
from duoseg.phantoms import Protocol
from duoseg.plugins.metrics import Dice

NET2 = "networks.net2.params"
FULL5, SEP5, FULL3 = (
    (f"{NET2}.decoder_kernel={k}", f"{NET2}.separable={str(sep).lower()}")
    for k, sep in ((5, False), (5, True), (3, False))
)
VARIANTS: dict[str, tuple[str, ...]] = {  # overrides of demo_two_stage.toml
    "5x5 w8 (paper kernels)": FULL5,
    "3x3 w8": FULL3,
    "sep 5x5 w8": SEP5,
    "3x3 w16": (*FULL3, f"{NET2}.base_width=16"),
    "sep 5x5 w16": (*SEP5, f"{NET2}.base_width=16"),
    "3x3 w8 no norm": (*FULL3, f'{NET2}.norm="none"'),
    "3x3 w8 K=9": (*FULL3, f"{NET2}.k=9", "schedule.params.k=9"),
    "5x5 w8 foreground guidance": (
        *FULL5,
        f'{NET2}.guidance="foreground"',
        f"{NET2}.residual=false",
    ),
}
# The study's phantoms: cardiac-CT voxels over a view cropped to the heart (it compares
# Net2 variants inside the heart's region, where the tile puts Net2).
HEART_VIEW = Protocol((224, 224, 144), (0.56, 0.60), (0.85, 0.95))
SLAB = 16  # output slices of the timed slab
PLANE = (256, 256)  # a heart ROI at about 0.5 mm


def net2_speed(run: Path, registry: Registry) -> dict[str, float]:
    net2 = load_model(run, registry).networks["net2"].eval()
    shape = (1, net2.in_channels, SLAB + net2.k - 1, *PLANE)  # type: ignore[operator]
    x = torch.randn(shape)
    times = []
    with torch.inference_mode():
        net2(x)
        for _ in range(3):
            start = time.perf_counter()
            net2(x)
            times.append(time.perf_counter() - start)
    cost = network_cost(net2, shape)
    return {"kflop_per_voxel": cost.flops_per_output_voxel / 1e3,
            "mvoxel_per_s": SLAB * PLANE[0] * PLANE[1] / min(times) / 1e6,
            "parameters": cost.parameters}  # fmt: skip


def validation_dice(run: Path, data: DemoData, registry: Registry) -> dict[str, dict[str, float]]:
    """Dice per structure on the validation case, as predicted and with each class's
    largest component kept (``predict --lcc``)."""
    case = open_cache(data.cache, registry).case(data.validation)
    labels = predict_labels(load_model(run, registry), case, Options())
    names, truth = case.meta.class_names, case.label[...]
    result = {}
    for kind, guess in (("plain", labels), ("lcc", largest_components(labels, len(names)))):
        scores = Dice().per_class(guess, truth, len(names))
        pairs = zip(names[1:], scores, strict=True)
        result[kind] = {n: 0.0 if s is None else float(s) for n, s in pairs}
    return result


def study(
    out: Path, seconds: float, names: list[str], seeds: list[int], reuse: bool
) -> list[dict[str, Any]]:
    registry = load_plugins()
    preset = Preset("pareto", HEART_VIEW, train_cases=4, test_cases=1, seconds=seconds)
    data = data_layout(out / "data", preset)
    if not (reuse and data.cache.exists()):
        data = prepare_data(out / "data", preset, registry)
    rows = []
    for name in names:
        for seed in seeds:
            run = out / "runs" / f"{name.replace(' ', '_')}_s{seed}"
            if not (reuse and (run / "last.safetensors").exists()):
                overrides = [f"train.seconds={seconds}", f"seed={seed}", *VARIANTS[name]]
                train("two_stage", data, run, overrides, device="cpu", registry=registry)
            dice = validation_dice(run, data, registry)
            rows.append({"variant": name, "seed": seed, "overrides": list(VARIANTS[name]),
                         "seconds": seconds,
                         "mean_dice": float(np.mean(list(dice["plain"].values()))),
                         "myo_dice": dice["plain"]["Myo"],
                         "mean_dice_lcc": float(np.mean(list(dice["lcc"].values()))),
                         "dice": dice["plain"], "dice_lcc": dice["lcc"],
                         **net2_speed(run, registry)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Each variant's mean over seeds, the bar spanning the seeds' range."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("mvoxel_per_s", "Net2 Mvoxel/s (CPU, 256² ROI slab)"),
              ("kflop_per_voxel", "Net2 kFLOP per output voxel"))  # fmt: skip
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name in variants:
            mine = [row for row in rows if row["variant"] == name]
            dice = [row["mean_dice"] for row in mine]
            # speed: the best of the seeds' timings (each run is timed the same way)
            x, y = float(max(row[key] for row in mine)), float(np.mean(dice))
            ax.errorbar(x, y, yerr=[[y - min(dice)], [max(dice) - y]], fmt="o", capsize=3)
            ax.annotate(name, (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("validation mean Dice")
        ax.grid(alpha=0.3)
    seeds = len({row["seed"] for row in rows})
    figure.suptitle(f"Net2 variants, each trained {rows[0]['seconds']:.0f} s (all four steps), "
                    f"{seeds} seed(s): mean and range")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="score the runs already in OUT_DIR instead of training them again",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    rows = study(args.out, args.seconds, args.variants, args.seeds, args.reuse)
    (args.out / "pareto.json").write_text(json.dumps(rows, indent=1))
    print(plot(rows, args.out / "pareto.png"))


if __name__ == "__main__":
    main()
