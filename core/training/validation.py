"""Validation and the choice of the best checkpoint.

After a stage (and every ``train.validate_every`` steps) the method labels each
validation case as its stage kind says (:meth:`Method.validate`), and the registered
``dice`` metric scores it per class. ``best`` competes like with like: only scores of
the final predictor (a cascade's first network scored alone is another quantity) may
replace it, and a later score wins a tie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from duoseg.core.inference.streaming import Options, predict_labels
from duoseg.core.interfaces.method import Method, Model
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.schedule import Stage
from duoseg.core.interfaces.store import CacheCase, CacheReader
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.core.training.checkpoint import TrainState
from numpy.typing import NDArray

SCORE = "dice"  # the metric component validation scores with


class Validator:
    """Scores the networks on the validation cases; ``log`` receives each result row."""

    def __init__(
        self,
        cases: list[str],
        cache: CacheReader,
        method: Method,
        registry: Registry,
        log: Callable[[dict[str, Any]], None],
    ) -> None:
        self.cases, self.cache, self.method, self.log = cases, cache, method, log
        self.metric = registry.build("metric", SCORE)

    @torch.no_grad()
    def score(
        self,
        stage: Stage,
        state: TrainState,
        networks: Mapping[str, SegmentationNetwork],
        preprocessing: Preprocessing,
        device: torch.device,
    ) -> float | None:
        """The mean Dice over classes (each averaged over cases); None without cases."""
        if not self.cases:
            return None
        for network in networks.values():
            network.eval()
        model = Model(dict(networks), preprocessing, device, self.method)
        scores = []
        for case_id in self.cases:
            case = self.cache.case(case_id)
            prediction, target = self.method.validate(stage.kind, model, case, _predict_labels)
            scores.append(self.metric.per_class(prediction, target, case.meta.classes))
        names = self.cache.case(self.cases[0]).meta.class_names[1:]
        per_class = {n: _mean([s[i] for s in scores]) for i, n in enumerate(names)}
        mean = _mean(list(per_class.values()))
        row = {"validation_dice": per_class, "validation_mean_dice": mean}
        self.log({"stage": stage.name, "step": state.step, **row})
        for network in networks.values():
            network.train()
        return mean


def improves_best(method: Method, stage: Stage, score: float, state: TrainState) -> bool:
    """Whether a stage's end ``score`` replaces the run's best checkpoint."""
    return method.scores_final(stage.kind) and score >= state.best_score  # later wins a tie


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(present)) if present else float("nan")


def _predict_labels(model: Model, case: CacheCase) -> NDArray[np.uint8]:
    """What ``duoseg predict`` writes for ``case``, with the default options."""
    return predict_labels(model, case, Options())
