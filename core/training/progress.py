"""A stage's progress bar: what will stop the stage, and how far it is.

Under ``train.seconds`` a stage stops when its share of the time is spent; its
iterations are then only an upper bound (the demo's step 4 plans 15,000 and runs a
few hundred), and a bar over them would show "0/15000, ETA 3 hours" for a stage
about to end. Such a bar counts seconds of the share instead; the step and the loss
go in its postfix.
"""

from __future__ import annotations

import math
from typing import Any

from duoseg.core.interfaces.schedule import Stage
from duoseg.core.training.checkpoint import TrainState

TIMED_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
)


class StageProgress:
    """The bar of one stage: seconds of ``budget`` when it is finite, else iterations."""

    def __init__(self, stage: Stage, state: TrainState, budget: float, *, shown: bool) -> None:
        from tqdm import tqdm

        self.timed = math.isfinite(budget)
        common: dict[str, Any] = {"desc": f"stage {stage.name}", "disable": not shown}
        if self.timed:
            self.bar = tqdm(total=budget, initial=min(state.seconds, budget), unit="s",
                            bar_format=TIMED_FORMAT, **common)  # fmt: skip
        else:
            self.bar = tqdm(total=stage.iterations, initial=state.step, unit="it", **common)

    def advance(self, state: TrainState, loss: float) -> None:
        """One step done: ``state`` is the state after it."""
        if self.timed:
            self.bar.update(min(state.seconds, self.bar.total) - self.bar.n)
            self.bar.set_postfix(step=state.step, loss=f"{loss:.4f}")
        else:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        self.bar.close()
