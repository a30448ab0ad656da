"""The loss contract."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)


class LossConformance(ComponentSuite):
    """Bounded values, zero for a perfect prediction, finite gradients, clear errors."""

    kind = "loss"
    classes: ClassVar[int] = 4

    @pytest.fixture
    def loss(self, registry: Registry, component_name: str) -> SegmentationLoss:
        loss: SegmentationLoss = self.build(registry, component_name)
        return loss

    def scores(self, loss: SegmentationLoss, shape: tuple[int, ...]) -> torch.Tensor:
        logits = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        return logits if loss.inputs == "logits" else logits.softmax(1)

    def labels(self, shape: tuple[int, ...], absent: int | None = None) -> torch.Tensor:
        high = self.classes - (absent is not None)
        target = torch.randint(0, high, shape, generator=torch.Generator().manual_seed(3))
        if absent is not None:
            target[target >= absent] += 1
        return target

    def perfect(self, loss: SegmentationLoss, target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        return onehot * 40 if loss.inputs == "logits" else onehot

    def test_is_a_segmentation_loss(self, loss: SegmentationLoss) -> None:
        assert isinstance(loss, SegmentationLoss)

    @pytest.mark.parametrize("spatial", [(6, 8, 8), (8, 8)], ids=["3d", "2d"])
    def test_value_lies_in_the_documented_range(
        self, loss: SegmentationLoss, spatial: tuple[int, ...]
    ) -> None:
        value = loss(self.scores(loss, (2, self.classes, *spatial)), self.labels((2, *spatial)))
        low, high = loss.value_range
        assert value.dim() == 0 and low <= float(value) <= high

    def test_perfect_prediction_gives_zero(self, loss: SegmentationLoss) -> None:
        target = self.labels((2, 6, 8, 8))
        assert float(loss(self.perfect(loss, target), target)) == pytest.approx(0.0, abs=1e-4)

    def test_gradients_are_finite_when_a_class_is_absent(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8)).requires_grad_()
        loss(scores, self.labels((2, 6, 8, 8), absent=self.classes - 1)).backward()
        assert scores.grad is not None and torch.isfinite(scores.grad).all()

    def test_one_hot_and_integer_targets_agree(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8))
        target = self.labels((2, 6, 8, 8))
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        torch.testing.assert_close(loss(scores, onehot), loss(scores, target))

    def test_rejects_a_label_out_of_range(self, loss: SegmentationLoss) -> None:
        target = self.labels((1, 4, 4, 4))
        target[0, 0, 0, 0] = self.classes
        limit = f"0..{self.classes - 1}"
        with pytest.raises(InputShapeError, match=f"label value {self.classes} outside {limit}"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), target)

    def test_rejects_a_mismatched_target(self, loss: SegmentationLoss) -> None:
        with pytest.raises(InputShapeError, match="does not match scores"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), self.labels((1, 4, 4, 5)))
