"""Training figures on CPU: does the data pipeline keep up, and what step 4's cache of
Net1 outputs saves. The demo-sized config is examples/configs/tiny.toml."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from duoseg.core.training.checkpoint import TrainState
from duoseg.phantoms import phantom_cache

from benchmarks.data_fixtures import big_cache
from benchmarks.training_setup import first_batches, make_trainer

HERE = Path(__file__).parent

TINY = Path(__file__).resolve().parents[1] / "examples" / "configs" / "tiny.toml"
STAGES = {"2_coarse": 1, "3_end_to_end": 2, "4_fine": 3}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return phantom_cache(tmp_path_factory.mktemp("train-bench"), cases=5, size=(160, 128, 80))


@pytest.mark.parametrize("stage_name", list(STAGES))
def test_loader_against_training_step(benchmark, cache, tmp_path, stage_name: str) -> None:
    """Batches/s that 2 DataLoader workers deliver vs batches/s the training step consumes."""
    index = STAGES[stage_name]
    trainer = make_trainer(TINY, cache, tmp_path / "run", ["train.workers=2",
                           "schedule.params.iterations=[400, 400, 400, 400]"])  # fmt: skip
    stage = trainer.schedule.stages[index]
    start = time.perf_counter()
    batches = first_batches(trainer, index, 30)
    loader_rate = len(batches) / (time.perf_counter() - start)
    optimizer = trainer._optimizer(stage)
    state = TrainState(stage=index)
    steps = iter(batches * 10)

    def step() -> None:
        trainer._train_step(stage, next(steps), optimizer, state)

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    step_rate = 1 / benchmark.stats.stats.mean
    benchmark.extra_info.update(
        loader_batches_per_s=loader_rate, step_batches_per_s=step_rate,
        loader_over_step=loader_rate / step_rate,
    )  # fmt: skip


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "recomputed"])
def test_step4_with_and_without_cached_net1_outputs(benchmark, cache, tmp_path, cached) -> None:
    trainer = make_trainer(TINY, cache, tmp_path / "run", [])
    stage = trainer.schedule.stages[3]
    batches = first_batches(trainer, 3, 12)
    optimizer = trainer._optimizer(stage)
    state = TrainState(stage=3)
    steps = iter(batches * 10)

    def step() -> None:
        if not cached:
            trainer.method._coarse.clear()  # type: ignore[attr-defined]
        trainer._train_step(stage, next(steps), optimizer, state)

    torch.manual_seed(0)
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    benchmark.extra_info.update(seconds_per_step=benchmark.stats.stats.mean)


@pytest.mark.parametrize("kept", [64, 4])
def test_step4_memory_is_flat_in_the_number_of_cases(benchmark, registry, tmp_path, kept) -> None:
    """Step 4 over the 20 benchmark cases of 512 x 512 x 256; target: peak RSS < 2 GiB,
    flat in the number of cases: Net1's coarse output is kept for at most ``kept`` cases
    (method.params.coarse_cache_cases; 64 by default, so all 20 here: about 5 MB a case
    with 8-class guidance), the full-resolution guidance made per sample."""
    command = [sys.executable, str(HERE / "step4_memory.py"), str(big_cache(registry)),
               str(tmp_path / "run"), "--set", "method.component=two_stage",
               "--set", f"method.params.coarse_cache_cases={kept}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = benchmark.pedantic(
        lambda: json.loads(result.stdout.strip().splitlines()[-1]), rounds=1, iterations=1
    )
    benchmark.extra_info.update(figures)
