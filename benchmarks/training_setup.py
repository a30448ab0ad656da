"""A trainer on a phantom cache, stage by stage, for the training benchmarks."""

from __future__ import annotations

from pathlib import Path

from duoseg.core import load_plugins
from duoseg.core.cache_build import build_cache
from duoseg.core.checkpoint import TrainState
from duoseg.core.config import load_config
from duoseg.core.phantom import write_phantoms
from duoseg.core.trainer import Trainer, config_as_dict


def phantom_cache(root: Path, *, cases: int, size: tuple[int, int, int], seed: int = 0) -> Path:
    registry = load_plugins(entry_points=False)
    write_phantoms(root / "src", cases=cases, size=size, seed=seed, compress=False)
    build_cache(root / "src", root / "cache.zarr", importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr"))  # fmt: skip
    return root / "cache.zarr"


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
