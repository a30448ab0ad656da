"""A trainer on a phantom cache, stage by stage, for the training benchmarks."""

from __future__ import annotations

from pathlib import Path

from duoseg.core import load_plugins
from duoseg.core.config import load_config
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.trainer import Trainer, config_as_dict
from duoseg.plugins.importers import MMWHS_LABELS

# How phantom data are prepared, for models built with random weights.
MMWHS_DATA = Preprocessing.with_targets(
    {"coarse": 3.0, "baseline": 2.0},  # the baseline's 2 mm level, as the demo's cache
    class_names=("background", *MMWHS_LABELS),
    label_values=(0, *MMWHS_LABELS.values()),
)


def make_trainer(config: Path, cache: Path, out: Path, overrides: list[str]) -> Trainer:
    parsed = load_config(config, [f'data.cache="{cache}"', *overrides])
    return Trainer(parsed, load_plugins(entry_points=False), out, source=str(config),
                   raw_config=config_as_dict(parsed))  # fmt: skip


def first_batches(trainer: Trainer, stage_index: int, count: int) -> list[dict]:
    stage = trainer.schedule.stages[stage_index]
    batches = []
    for batch in trainer._batches(stage, TrainState(stage=stage_index)):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches
