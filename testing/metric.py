"""The metric contract."""

from __future__ import annotations

import math
import re
from typing import ClassVar

import numpy as np
import pytest
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.metric import Metric
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)
from numpy.typing import NDArray


class MetricConformance(ComponentSuite):
    """A perfect prediction scores the best value, overlap beats no overlap, an empty
    mask against a non-empty one scores the worst and two empty ones NaN; symmetric
    unless the metric says ``symmetric = False``; millimetre metrics scale with the
    spacing and unitless ones ignore it; bad inputs are refused naming the metric.

    The best and worst values are 1 and 0 where higher is better, 0 and infinity
    (distances) otherwise: override :meth:`best` and :meth:`worst` for other ranges."""

    kind = "metric"
    shape: ClassVar[tuple[int, int, int]] = (12, 14, 16)

    @pytest.fixture
    def metric(self, registry: Registry, component_name: str) -> Metric:
        metric: Metric = self.build(registry, component_name)
        return metric

    def best(self, metric: Metric) -> float:
        return 1.0 if metric.higher_is_better else 0.0

    def worst(self, metric: Metric) -> float:
        return 0.0 if metric.higher_is_better else math.inf

    def box(self, low: tuple[int, int, int], size: tuple[int, int, int]) -> NDArray[np.bool_]:
        mask = np.zeros(self.shape, bool)
        mask[tuple(slice(a, a + n) for a, n in zip(low, size, strict=True))] = True
        return mask

    def better(self, metric: Metric, a: float, b: float) -> bool:
        return a > b if metric.higher_is_better else a < b

    def test_is_a_metric(self, metric: Metric) -> None:
        assert isinstance(metric, Metric) and metric.name

    def test_a_perfect_prediction_scores_the_best_value(self, metric: Metric) -> None:
        target = self.box((2, 3, 4), (5, 6, 7))
        value = metric(target.copy(), target, (1.0, 1.0, 1.0))
        assert isinstance(value, float)
        assert value == pytest.approx(self.best(metric), abs=1e-9)

    def test_overlap_beats_a_disjoint_prediction(self, metric: Metric) -> None:
        target = self.box((1, 1, 1), (5, 5, 5))
        shifted, disjoint = self.box((1, 1, 3), (5, 5, 5)), self.box((6, 8, 9), (5, 5, 5))
        spacing = (1.0, 1.0, 1.0)
        perfect, partial, apart = (metric(p, target, spacing) for p in (target, shifted, disjoint))
        assert self.better(metric, perfect, partial) and self.better(metric, partial, apart)
        if metric.higher_is_better:  # overlap measures: no overlap is the worst there is
            assert apart == pytest.approx(self.worst(metric), abs=1e-9)

    def test_empty_masks(self, metric: Metric) -> None:
        empty, full = np.zeros(self.shape, bool), self.box((2, 2, 2), (4, 4, 4))
        assert math.isnan(metric(empty, empty.copy(), (1.0, 1.0, 1.0)))
        for prediction, target in ((empty, full), (full, empty)):
            assert metric(prediction, target, (1.0, 1.0, 1.0)) == self.worst(metric)

    def test_symmetric_as_declared(self, metric: Metric) -> None:
        a, b = self.box((1, 2, 3), (6, 5, 4)), self.box((3, 4, 2), (3, 8, 6))
        forward, backward = metric(a, b, (1.0, 0.8, 0.7)), metric(b, a, (1.0, 0.8, 0.7))
        if getattr(metric, "symmetric", True):
            assert forward == pytest.approx(backward, rel=1e-9)
        else:
            assert forward != pytest.approx(backward, rel=1e-9)

    def test_spacing_scales_millimetres_and_nothing_else(self, metric: Metric) -> None:
        a, b = self.box((1, 2, 3), (6, 5, 4)), self.box((3, 4, 2), (3, 8, 6))
        one, two = metric(a, b, (1.0, 1.0, 1.0)), metric(a, b, (2.0, 2.0, 2.0))
        if metric.unit == "mm":
            assert two == pytest.approx(2 * one, rel=1e-6)
        elif not metric.unit:
            assert two == pytest.approx(one, rel=1e-9)

    def test_bad_inputs_are_refused_naming_the_metric(self, metric: Metric) -> None:
        name = re.escape(metric.name)
        ones = np.ones((4, 4, 4), bool)
        with pytest.raises(
            InputShapeError,
            match=rf"{name}: prediction shape \(4, 4, 4\) differs from target \(4, 4, 5\)",
        ):
            metric(ones, np.ones((4, 4, 5), bool), (1, 1, 1))
        with pytest.raises(InputShapeError, match=rf"{name}: spacing \(1, 0, 1\) must be 3 sizes"):
            metric(ones, ones, (1, 0, 1))
