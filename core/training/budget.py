"""The time budget: ``train.seconds`` shared by the stages in proportion to their
``time_share`` where the schedule gives them, else to their iterations; a stage ends at
its iterations or its share, whichever comes first."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from duoseg.core.errors import ConfigError
from duoseg.core.interfaces.schedule import Schedule, Stage


class TimeBudget:
    """Each stage's share of ``seconds`` (0: no limit) and whether it is spent."""

    def __init__(self, seconds: float, schedule: Schedule, world: int) -> None:
        if seconds < 0 or math.isnan(seconds):
            raise ConfigError(f"train.seconds must be >= 0 (0 = no time limit), got {seconds}")
        self.seconds, self.schedule, self.world = seconds, schedule, world

    def share(self, stage: Stage) -> float:
        """The stage's share in seconds (infinite when unset)."""
        if self.seconds == 0:
            return math.inf
        if stage.time_share is not None:
            shares = sum(s.time_share or 0.0 for s in self.schedule.stages)
            return self.seconds * stage.time_share / shares
        planned = sum(s.iterations for s in self.schedule.stages)
        return self.seconds * stage.iterations / planned

    def spent(self, seconds: float, share: float) -> bool:
        """Whether ``seconds`` used up ``share``; every rank stops at the same step (rank
        0's clock decides)."""
        if math.isinf(share):
            return False
        spent = torch.tensor([float(seconds >= share)])
        if self.world > 1 and dist.is_initialized():
            dist.broadcast(spent, src=0)
        return bool(spent.item())
