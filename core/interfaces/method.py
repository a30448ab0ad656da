"""The method interface: what turns networks into a segmentation.

A method (the two-stage model, a resampled baseline, a sliding-window network, a third
party's cascade) is a ``method`` plugin. The engine keeps what every method shares -
the training loop, DDP, checkpoints and resume, the streaming driver, sinks and
metrics - and asks the method for the rest:

* :attr:`Method.roles`: the network roles it combines (``[networks.<role>]`` in a
  config), and :meth:`Method.check`: whether the networks and schedule fit together;
* :meth:`Method.levels`: the cache's resampled levels it reads (its working grids),
  which ``train`` and ``predict`` require of the cache and of the model's record;
* for each kind of stage a schedule names (:attr:`Stage.kind`), the forward pass from
  an augmented batch to each role's (scores, target) parts - :meth:`Method.forward` -
  and what validation compares - :meth:`Method.validate`;
* for inference, a :class:`SlabPredictor` per case: the region to label, the slab depth
  that fits a memory budget, and ``step(z0, z1)`` giving class probabilities for those
  slices. The engine streams slabs through it into the output.

Subclasses fill the ``_``-prefixed methods; the public ones validate and explain.
"""

from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from duoseg.core.errors import ConfigError, PredictError
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.schedule import Schedule, Stage
from duoseg.core.interfaces.store import CacheCase, CacheReader
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.config import TrainConfig, parse
from duoseg.core.records.preprocessing import Level, Preprocessing
from numpy.typing import NDArray
from torch import Tensor

Part = tuple[Tensor, Tensor]  # a network's scores and their target, for part of a batch
Region = tuple[slice, slice, slice]
# The engine's prediction of one case's labels, what ``duoseg predict`` writes: handed
# to :meth:`Method.validate` so that a method scores what prediction runs.
PredictLabels = Callable[["Model", CacheCase], NDArray[np.uint8]]


@dataclass
class TrainingContext:
    """What a method's forward pass may use besides the batch.

    ``augment(x, label, fill)`` applies the run's augmentations with this step's random
    draw (one draw moves every channel of ``x`` and the label together); ``fill`` gives
    each channel's value outside the volume.
    """

    networks: Mapping[str, SegmentationNetwork]
    preprocessing: Preprocessing
    metas: Mapping[str, CaseMeta]
    cache: CacheReader
    device: torch.device
    augment: Callable[[Tensor, Tensor, list[float]], tuple[Tensor, Tensor]]


@dataclass
class Model:
    """Trained networks, the method that combines them, and how their data were prepared:
    what a method predicts with (the engine loads it from a run or a package)."""

    networks: dict[str, SegmentationNetwork]
    preprocessing: Preprocessing
    device: torch.device
    method: Method
    checkpoint: Path | None = None  # the file the networks were read from, if any
    source: Path | None = None  # MODEL as given (a run folder or a package), for messages

    @property
    def classes(self) -> int:
        return self.preprocessing.classes


class SlabPredictor(ABC):
    """One case's prediction, slice slab by slice slab.

    ``region`` is the box the predictor labels; everything outside it is background.
    The engine calls :meth:`step` with consecutive, increasing slabs inside the
    region's z range (the first one may start late: a resumed output). ``details``
    are added to the case's report (timings, warnings).
    """

    def __init__(self, region: Region) -> None:
        self.region = region
        self.details: dict[str, Any] = {}

    @abstractmethod
    def depth(self, budget_mib: float) -> int:
        """Output slices per slab whose working memory fits ``budget_mib``."""

    @abstractmethod
    def step(self, z0: int, z1: int) -> Tensor:
        """Class probabilities ``(C + 1, z1 - z0, ry, rx)`` of slices ``z0..z1`` over the
        region's in-plane box ``(ry, rx)``."""


@dataclass(frozen=True)
class NoOptions:
    """A method without prediction options."""


class Method(ABC):
    """How a method's networks train and predict.

    Class attributes a subclass sets:

    * ``roles``: the network roles, all of which prediction needs;
    * ``stage_kinds``: the stage kinds :meth:`forward` accepts;
    * ``prediction_options``: a frozen dataclass of the method's own prediction options
      (``duoseg predict --method-option KEY=VALUE``);
    * ``final_kinds``: the stage kinds whose validation scores what prediction runs
      (default: every stage kind). Only their scores compete for the run's best
      checkpoint: a cascade's scores of its first network alone are not the model's.

    Parameters come from the config's ``[method]`` section, like any component's.
    """

    roles: ClassVar[tuple[str, ...]] = ()
    stage_kinds: ClassVar[tuple[str, ...]] = ()
    prediction_options: ClassVar[type[Any]] = NoOptions
    final_kinds: ClassVar[tuple[str, ...] | None] = None
    name: str = ""  # the registered name, for messages; set when a config builds it

    def __str__(self) -> str:
        return self.name or type(self).__name__

    def scores_final(self, kind: str) -> bool:
        """Whether validation after a stage of ``kind`` scores the final predictor."""
        return kind in (self.stage_kinds if self.final_kinds is None else self.final_kinds)

    # ------------------------------------------------------------------ checks

    def check(self, networks: Mapping[str, SegmentationNetwork], schedule: Schedule | None) -> None:
        """Raise :class:`ConfigError` unless ``networks`` fill every role and fit the
        method, and every stage of ``schedule`` (when given) is one the method trains."""
        missing = [role for role in self.roles if role not in networks]
        if missing:
            raise ConfigError(
                f"method {self} needs networks {list(self.roles)}; "
                f"networks.{missing[0]} is missing (given: {sorted(networks)})"
            )
        extra = sorted(set(networks) - set(self.roles))
        if extra:
            raise ConfigError(
                f"method {self} uses networks {list(self.roles)}; "
                f"networks.{extra[0]} is not one of them"
            )
        for index, stage in enumerate(schedule.stages if schedule else ()):
            self._check_stage(stage, f"schedule.stages[{index}]")
        self._check(networks, schedule)

    def _check_stage(self, stage: Stage, where: str) -> None:
        if stage.kind not in self.stage_kinds:
            raise ConfigError(
                f"{where}.kind = {stage.kind!r}: method {self} trains stages of kind "
                f"{', '.join(map(repr, self.stage_kinds))}"
            )
        for role in (*stage.train, *stage.freeze, *(t.network for t in stage.losses)):
            if role not in self.roles:
                raise ConfigError(
                    f"{where} ({stage.name!r}) names network {role!r}; method {self} "
                    f"has roles {list(self.roles)}"
                )

    def _check(  # noqa: B027 - an optional hook
        self, networks: Mapping[str, SegmentationNetwork], schedule: Schedule | None
    ) -> None:
        """Method-specific compatibility checks (channels, K against a sampler's k)."""

    def levels(self, train: TrainConfig) -> tuple[Level, ...]:
        """The cache levels (name, target spacing) the method reads besides the
        full-resolution arrays, for the run's ``train`` settings; default none. The
        ``coarse`` level is in every cache: declare it only to pin its spacing."""
        return ()

    # ------------------------------------------------------------------ training

    def adapt_sampler(  # noqa: B027 - an optional hook
        self, kind: str, sampler: Sampler, preprocessing: Preprocessing
    ) -> None:
        """Adjust a stage's sampler (for instance the grid it resamples to); default none."""

    def forward(
        self, kind: str, batch: Mapping[str, Any], context: TrainingContext
    ) -> dict[str, list[Part]]:
        """Each role's (scores, target) parts for one batch of a stage of ``kind``; the
        batch holds ``image``, ``label``, ``case_id`` and ``origin`` (see ``Sample``).
        The method applies ``context.augment`` itself, since it knows which channels
        join the image."""
        if kind not in self.stage_kinds:
            raise ConfigError(f"method {self} has no stage kind {kind!r}")
        return self._forward(kind, batch, context)

    @abstractmethod
    def _forward(
        self, kind: str, batch: Mapping[str, Any], context: TrainingContext
    ) -> dict[str, list[Part]]: ...

    def validate(
        self, kind: str, model: Model, case: CacheCase, predict: PredictLabels
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """The labels validation scores after a stage of ``kind``, and their target.

        By default the prediction itself (``predict``: what ``duoseg predict`` writes)
        against the case's full-resolution label."""
        return predict(model, case), validation_label(case.label, case.case_id)

    # ------------------------------------------------------------------ inference

    def predictor(self, model: Model, case: CacheCase, options: Mapping[str, Any]) -> SlabPredictor:
        """The slab predictor of one case, with the method's prediction ``options``."""
        return self._predictor(model, case, self.parse_options(options, case.case_id))

    @abstractmethod
    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor: ...

    def parse_options(self, options: Mapping[str, Any], where: str) -> Any:
        """``options`` as :attr:`prediction_options`, refusing unknown keys by name."""
        fields = {f.name: f for f in dataclasses.fields(self.prediction_options)}
        for key, value in options.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(fields) or "none"
                raise PredictError(
                    f"{where}: method option {key}={value!r} is not an option of method "
                    f"{self} (options: {known}){hint}"
                )
        try:  # the config parser checks each value's type and names the key
            return parse(self.prediction_options, options, source=f"{where}: method {self}")
        except ConfigError as exc:
            raise PredictError(str(exc)) from None
        except (TypeError, ValueError) as exc:  # the options' own checks (__post_init__)
            raise PredictError(f"{where}: method {self} option {exc}") from exc


def validation_label(array: Any, case_id: str) -> NDArray[np.uint8]:
    """A validation case's label (full resolution or coarse), refused when absent."""
    if array is None:
        raise ConfigError(f"data.validation_cases: case {case_id} has no label")
    return np.asarray(array[...], dtype=np.uint8)
