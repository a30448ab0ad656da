"""Charts from saved benchmark runs (pytest-benchmark JSON).

    python benchmarks/plot.py RUN.json [RUN.json ...] [--out DIR]

Writes, for the figures the runs hold:
- ``inference_depth.png``: voxels/s and peak memory against the number of slices;
- ``patches.png``: random patch pairs/s by store and samples/s by sampler;
- ``peers.png``: duoseg against MONAI (sliding-window inference) and TorchIO
  (LabelSampler), speed and memory;
- ``accuracy.png``: mean Dice of every model trained for the same wall-clock (with the
  2 mm ceiling), and each one's inference time and working memory on a test case and,
  where the run has them, on a 512 x 512 x 256 case.
Several runs of one benchmark (e.g. two machines) are drawn side by side, labelled by
file name.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Runs = dict[str, dict[str, dict[str, Any]]]  # run label -> benchmark name -> extra_info


def load(paths: list[Path]) -> Runs:
    return {
        path.stem: {
            b["name"]: b.get("extra_info", {}) for b in json.loads(path.read_text())["benchmarks"]
        }
        for path in paths
    }


def select(runs: Runs, prefix: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per run, the benchmarks whose name starts with ``prefix``, keyed by their parameter."""
    found = {}
    for label, benchmarks in runs.items():
        hits = {_param(name): info for name, info in benchmarks.items() if name.startswith(prefix)}
        if hits:
            found[label] = hits
    return found


def _param(name: str) -> str:
    return name[name.index("[") + 1 : -1] if "[" in name else name


def plot_depth(runs: Runs, out: Path) -> Path | None:
    data = select(runs, "test_memory_does_not_grow_with_depth")
    if not data:
        return None
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for label, hits in data.items():
        depths = sorted(hits, key=int)
        speed.plot([int(d) for d in depths], [hits[d]["voxels_per_s"] / 1e6 for d in depths],
                   "o-", label=label)  # fmt: skip
        memory.plot([int(d) for d in depths], [hits[d]["peak_rss_mib"] for d in depths],
                    "o-", label=label)  # fmt: skip
    speed.set(xlabel="slices (512 x 512 each)", ylabel="Mvoxel/s", title="two-stage throughput")
    memory.set(xlabel="slices (512 x 512 each)", ylabel="peak RSS (MiB)",
               title="peak memory", ylim=(0, None))  # fmt: skip
    return _save(figure, out / "inference_depth.png", speed, memory)


def plot_patches(runs: Runs, out: Path) -> Path | None:
    stores = select(runs, "test_random_patch_pair_reads")
    samplers = select(runs, "test_sampler_throughput")
    if not stores and not samplers:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _bars(left, stores, lambda info: info["pairs_per_s"])
    left.set(ylabel="64³ image+label pairs/s", title="random patch reads by store")
    _bars(right, samplers, lambda info: info["samples_per_s"])
    right.set(ylabel="samples/s", title="samplers (Zarr cache)")
    return _save(figure, out / "patches.png", left, right)


def plot_peers(runs: Runs, out: Path) -> Path | None:
    pairs = {}
    for label, benchmarks in runs.items():
        ours = benchmarks.get("test_memory_does_not_grow_with_depth[256]")
        monai = benchmarks.get("test_peer_monai_sliding_window")
        if ours and monai:
            pairs[label] = {"inference": (ours, monai)}
        sampler = benchmarks.get("test_sampling_memory_and_first_patch_latency")
        torchio = benchmarks.get("test_peer_torchio_label_sampler")
        if sampler and torchio:
            pairs.setdefault(label, {})["sampling"] = (sampler, torchio)
    if not pairs:
        return None
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    names, speeds, memories, latencies = [], [], [], []
    for label, found in pairs.items():
        if "inference" in found:
            ours, monai = found["inference"]
            names += [f"duoseg\n{label}", f"MONAI\n{label}"]
            speeds += [ours["voxels_per_s"] / 1e6, monai["voxels_per_s"] / 1e6]
            memories += [ours["working_mib"], monai["working_mib"]]
        if "sampling" in found:
            sampler, torchio = found["sampling"]
            latencies += [(f"duoseg\n{label}", sampler["first_patch_s_max"]),
                          (f"TorchIO\n{label}", torchio["first_patch_s"])]  # fmt: skip
    axes[0].bar(names, speeds)
    axes[0].set(ylabel="Mvoxel/s", title="full-volume inference, 512x512x256")
    axes[1].bar(names, memories)
    axes[1].set(ylabel="working memory (MiB)", title="inference memory over the loaded model")
    if latencies:
        axes[2].bar([n for n, _ in latencies], [v for _, v in latencies])
        axes[2].set_yscale("log")
    axes[2].set(ylabel="seconds", title="first class-balanced 64³ patch of a case")
    return _save(figure, out / "peers.png", *axes)


def plot_accuracy(runs: Runs, out: Path) -> Path | None:
    data = select(runs, "test_accuracy_at_equal_training_time")
    if not data:
        return None
    speed = select(runs, "test_speed_on_a_512_case")
    figure, axes = plt.subplots(1, 3 if speed else 2, figsize=(18 if speed else 12, 4))
    dice, cost = axes[0], axes[1]
    _bars(dice, data, lambda info: info["mean_dice"])
    ceilings = [b.get("test_ceiling", {}).get("mean_dice") for b in runs.values()]
    for ceiling in filter(None, ceilings):
        dice.axhline(ceiling, color="grey", linestyle="--", label="2 mm ceiling (mean)")
    dice.set(ylabel="mean Dice (7 structures)", ylim=(0, 1),
             title="equal training wall-clock, same cache and test cases")  # fmt: skip
    _bars(cost, data, lambda info: info["inference_seconds"])
    cost.set(ylabel="inference seconds per case", title="test case (working MiB on bars)")
    _label_memory(cost, data)
    if speed:  # the streaming budget only in the two-stage model's label
        speed = {run: {_speed_label(k): info for k, info in hits.items()}
                 for run, hits in speed.items()}  # fmt: skip
        _bars(axes[2], speed, lambda info: info["seconds"])
        axes[2].set(ylabel="seconds", title="512x512x256 case (working MiB on bars)")
        _label_memory(axes[2], speed)
    return _save(figure, out / "accuracy.png", *axes)


def _speed_label(key: str) -> str:
    """``two_stage-budget256-labels_box`` -> ``two_stage`` over ``256 MiB`` over
    ``labels' box``: the default budget and each model's own output are left unsaid."""
    label = key.replace("-budget1024", "")
    return re.sub(r"-budget(\d+)", r"\n\1 MiB", label).replace("-labels_box", "\nlabels' box")


def _label_memory(ax: Any, data: dict[str, dict[str, dict[str, Any]]]) -> None:
    for bar, info in zip(ax.patches, _flat(data), strict=True):
        ax.annotate(f"{info['working_mib']:.0f}", (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip


def _flat(data: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [info for hits in data.values() for info in hits.values()]


def _bars(
    ax: Any, data: dict[str, dict[str, dict[str, Any]]], value: Callable[[dict[str, Any]], float]
) -> None:
    width = 0.8 / max(len(data), 1)
    for index, (label, hits) in enumerate(data.items()):
        keys = list(hits)
        positions = [k + index * width for k in range(len(keys))]
        ax.bar(positions, [value(hits[k]) for k in keys], width, label=label)
        ax.set_xticks([k + width * (len(data) - 1) / 2 for k in range(len(keys))], keys)


def _save(figure: Any, path: Path, *axes: Any) -> Path:
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="charts from pytest-benchmark JSON files")
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN.json")
    parser.add_argument("--out", type=Path, default=Path("benchmark-charts"))
    args = parser.parse_args()
    runs = load(args.runs)
    for plot in (plot_depth, plot_patches, plot_peers, plot_accuracy):
        path = plot(runs, args.out)
        if path is not None:
            print(path)


if __name__ == "__main__":
    main()
