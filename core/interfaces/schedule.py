"""Training schedules as data: ordered stages, each naming what it samples, trains,
freezes and minimises. A ``schedule`` plugin is a factory returning a ``Schedule``.

A schedule names the method it trains (a ``method`` plugin); each stage's ``kind``
is one of that method's stage kinds, which decides the stage's forward pass. The
network roles the stages name are the method's roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duoseg.core.errors import ConfigError
from duoseg.core.records.config import ComponentRef


@dataclass(frozen=True)
class LossTerm:
    """``weight`` x loss ``component`` applied to the output of network ``network``."""

    network: str
    component: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule. Under ``train.seconds`` a stage trains for its share of
    the budget: ``time_share`` over the stages' sum when the schedule sets them, else
    its ``iterations`` over theirs (``iterations`` stays an upper bound either way)."""

    name: str
    kind: str
    sampler: ComponentRef
    train: tuple[str, ...]
    losses: tuple[LossTerm, ...]
    iterations: int
    freeze: tuple[str, ...] = ()
    lr: float = 1e-4
    batch_size: int = 1
    time_share: float | None = None

    def validate(self, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` (e.g. ``schedule.stages[2]``)."""
        if not self.kind:
            raise ConfigError(f"{where}: stage {self.name!r} has no kind")
        both = sorted(set(self.train) & set(self.freeze))
        if both:
            raise ConfigError(f"{where}: stage {self.name!r} both trains and freezes {both}")
        if not self.train:
            raise ConfigError(f"{where}: stage {self.name!r} trains no network")
        if self.iterations < 0:
            raise ConfigError(f"{where}.iterations = {self.iterations} must be >= 0")
        if not self.lr > 0:
            raise ConfigError(f"{where}.lr = {self.lr} must be > 0")
        if self.batch_size < 1:
            raise ConfigError(f"{where}.batch_size = {self.batch_size} must be >= 1")
        if self.time_share is not None and not self.time_share >= 0:
            raise ConfigError(f"{where}.time_share = {self.time_share} must be >= 0")
        if not self.losses:
            raise ConfigError(f"{where}: stage {self.name!r} has no loss terms")


@dataclass(frozen=True)
class Schedule:
    """The ordered stages, and the method (a ``method`` plugin's name) they train."""

    name: str
    method: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"schedule {self.name!r}: stage names repeat: {names}")
        for index, stage in enumerate(self.stages):
            stage.validate(f"schedule.stages[{index}]")
        shared = [s.time_share is not None for s in self.stages]
        if any(shared) and not all(shared):
            raise ConfigError(
                f"schedule {self.name!r}: time_share set on some stages only: {shared}"
            )

    @property
    def networks(self) -> tuple[str, ...]:
        """Every network role the stages train, freeze or score, in first-use order."""
        roles: list[str] = []
        for stage in self.stages:
            for role in (*stage.train, *stage.freeze, *(t.network for t in stage.losses)):
                if role not in roles:
                    roles.append(role)
        return tuple(roles)
