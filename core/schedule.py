"""Training schedules as data: ordered stages, each naming what it samples, trains,
freezes and minimises. A ``schedule`` plugin is a factory returning a ``Schedule``.

The paper's four steps (``wang2018``)::

    1 net1_coarse     Net1 on whole 3 mm volumes                 L_ROI(Net1)
    2 net1_subvolume  Net1 on subvolumes of per-batch size       L_ROI(Net1) + L(Net1)
    3 end_to_end      Net1 + Net2 on subvolumes                  L(Net1) + L(Net2)
    4 net2_stacks     Net2 on K-slice stacks, Net1 frozen        L(Net2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .config import ComponentRef
from .errors import ConfigError

Mode = Literal["net1_coarse", "net1_subvolume", "end_to_end", "net2_stacks", "baseline"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class LossTerm:
    """``weight`` x loss ``component`` applied to the output of network ``network``."""

    network: str
    component: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule."""

    name: str
    mode: Mode
    sampler: ComponentRef
    train: tuple[str, ...]
    losses: tuple[LossTerm, ...]
    iterations: int
    freeze: tuple[str, ...] = ()
    lr: float = 1e-4
    batch_size: int = 1

    def validate(self, where: str) -> None:
        """Raise :class:`ConfigError` naming ``where`` (e.g. ``schedule.stages[2]``)."""
        if self.mode not in MODES:
            raise ConfigError(f"{where}.mode = {self.mode!r} is not one of {', '.join(MODES)}")
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
        if not self.losses:
            raise ConfigError(f"{where}: stage {self.name!r} has no loss terms")


@dataclass(frozen=True)
class Schedule:
    """The ordered stages and the network roles they use."""

    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"schedule {self.name!r}: stage names repeat: {names}")
        for index, stage in enumerate(self.stages):
            stage.validate(f"schedule.stages[{index}]")

    @property
    def networks(self) -> tuple[str, ...]:
        """Every network role the stages train, freeze or score, in first-use order."""
        roles: list[str] = []
        for stage in self.stages:
            for role in (*stage.train, *stage.freeze, *(t.network for t in stage.losses)):
                if role not in roles:
                    roles.append(role)
        return tuple(roles)
