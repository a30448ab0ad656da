"""PNG plots of a run's metrics.jsonl: loss and validation Dice per stage."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def plot_metrics(metrics: Path, out_dir: Path) -> list[Path]:
    """Write ``loss.png`` and, when validated, ``validation.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses: dict[str, list[tuple[int, float]]] = defaultdict(list)
    dice: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if not metrics.exists():
        return []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            losses[row["stage"]].append((row["step"], row["loss"]))
        if "validation_mean_dice" in row:
            dice[row["stage"]].append((row["step"], row["validation_mean_dice"]))
    written = []
    if losses:
        figure, axes = plt.subplots(1, len(losses), figsize=(4 * len(losses), 3), squeeze=False)
        for axis, (stage, points) in zip(axes[0], losses.items(), strict=True):
            axis.plot(*zip(*points, strict=True))
            axis.set_title(f"stage {stage}")
            axis.set_xlabel("iteration")
            axis.set_ylabel("loss")
        figure.tight_layout()
        written.append(out_dir / "loss.png")
        figure.savefig(written[-1], dpi=80)
        plt.close(figure)
    if dice:
        figure, axis = plt.subplots(figsize=(5, 3))
        labels, values = [], []
        for stage, points in dice.items():
            for step, value in points:
                labels.append(f"{stage}:{step}")
                values.append(value)
        axis.plot(range(len(values)), values, marker="o")
        axis.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
        axis.set_ylabel("validation mean Dice")
        figure.tight_layout()
        written.append(out_dir / "validation.png")
        figure.savefig(written[-1], dpi=80)
        plt.close(figure)
    return written
