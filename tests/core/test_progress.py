"""A stage's progress bar under a time budget counts seconds, not the iteration cap."""

from __future__ import annotations

import math

from duoseg.core.interfaces.schedule import Stage
from duoseg.core.records.config import ComponentRef
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.progress import StageProgress

STAGE = Stage("4_fine", "net2_stacks", ComponentRef("stacks"), ("net2",), (), iterations=20000)


def test_under_a_time_budget_the_bar_counts_the_stages_seconds(capsys) -> None:
    progress = StageProgress(STAGE, TrainState(), 330.0, shown=True)
    assert (progress.bar.total, progress.bar.unit) == (330.0, "s")
    progress.advance(TrainState(step=3, seconds=10.2), 0.5)
    assert progress.bar.n == 10.2
    progress.advance(TrainState(step=4, seconds=400.0), 0.5)  # the last step runs over
    assert progress.bar.n == 330.0
    progress.close()
    shown = capsys.readouterr().err
    assert "330/330 s" in shown and "step=4" in shown
    assert "20000" not in shown


def test_without_a_budget_the_bar_counts_iterations_from_the_resumed_step() -> None:
    progress = StageProgress(STAGE, TrainState(step=7), math.inf, shown=True)
    assert (progress.bar.total, progress.bar.n, progress.bar.unit) == (20000, 7, "it")
    progress.advance(TrainState(step=8), 0.5)
    assert progress.bar.n == 8


def test_a_resumed_timed_stage_starts_at_the_seconds_it_had_spent() -> None:
    progress = StageProgress(STAGE, TrainState(step=7, seconds=120.0), 330.0, shown=True)
    assert progress.bar.n == 120.0
