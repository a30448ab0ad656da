"""Hand-computed values of the Dice losses (smooth = 0 unless stated, so values are exact)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from duoseg.core import Registry

TARGET = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2]).reshape(1, 2, 4)  # (b, y, x)
PREDICTED = torch.tensor([0, 0, 1, 1, 1, 1, 2, 0]).reshape(1, 2, 4)


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels, classes).movedim(-1, 1).float()


def build(registry: Registry, name: str, **params):
    return registry.build("loss", name, inputs="probabilities", **params)


def test_foreground_dice_perfect_disjoint_and_half(registry: Registry) -> None:
    loss = build(registry, "dice_foreground", smooth=0.0)
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0]).reshape(1, 2, 4)
    disjoint = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]).reshape(1, 2, 4)
    half = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0]).reshape(1, 2, 4)
    assert float(loss(one_hot(target, 2), target)) == 0.0
    assert float(loss(one_hot(disjoint, 2), target)) == pytest.approx(1.0)
    assert float(loss(one_hot(half, 2), target)) == pytest.approx(0.5)


def test_foreground_dice_scores_the_union_of_structures(registry: Registry) -> None:
    # Confusing two structures costs nothing: only foreground vs background counts.
    loss = build(registry, "dice_foreground", smooth=0.0)
    swapped = torch.where(TARGET == 1, 2, torch.where(TARGET == 2, 1, TARGET))
    assert float(loss(one_hot(swapped, 3), TARGET)) == 0.0


def test_weighted_dice_matches_eq1_with_normalised_inverse_counts(registry: Registry) -> None:
    # S = (4/5, 1, 2/3); weights 1/N = (1/2, 1/4, 1/2) normalised to (0.4, 0.2, 0.4)
    loss = build(registry, "dice_weighted", smooth=0.0)
    expected = 1 - (0.4 * 0.8 + 0.2 * 1.0 + 0.4 * 2 / 3)
    assert float(loss(one_hot(PREDICTED, 3), TARGET)) == pytest.approx(expected)
    without_background = build(registry, "dice_weighted", smooth=0.0, include_background=False)
    assert float(without_background(one_hot(PREDICTED, 3), TARGET)) == pytest.approx(2 / 9)


def test_weighted_dice_gives_absent_classes_no_weight(registry: Registry) -> None:
    predicted = PREDICTED.clone()
    predicted[0, 1, 3] = 3  # class 3 is absent from the target but predicted once
    loss = build(registry, "dice_weighted", smooth=1.0)
    # S = (1, 1, 3/4) for the present classes; weights (1/2, 1/4, 1/2) normalised by 5/4
    expected = 1 - (2 * 1 + 1 * 1 + 2 * 0.75) / 5
    assert float(loss(one_hot(predicted, 4), TARGET)) == pytest.approx(expected)


def test_generalized_dice(registry: Registry) -> None:
    loss = build(registry, "dice_generalized", smooth=0.0)
    assert float(loss(one_hot(PREDICTED, 3), TARGET)) == pytest.approx(0.2)


def test_dice_ce_of_uniform_logits(registry: Registry) -> None:
    loss = registry.build("loss", "dice_ce", smooth=0.0)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]).reshape(1, 2, 4)
    value = loss(torch.zeros(1, 2, 2, 4), target)
    assert float(value) == pytest.approx(0.5 + math.log(2))


def test_batch_dice_pools_the_batch(registry: Registry) -> None:
    per_sample = build(registry, "dice_foreground", smooth=0.0)
    pooled = build(registry, "dice_foreground", smooth=0.0, batch_dice=True)
    target = torch.stack([torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 1, 1, 1]])])
    predicted = torch.stack([torch.tensor([[1, 0, 0, 0]]), torch.tensor([[1, 1, 1, 1]])])
    scores = one_hot(predicted, 2)
    assert float(per_sample(scores, target)) == pytest.approx((1 - 2 / 3 + 0) / 2)
    assert float(pooled(scores, target)) == pytest.approx(1 - 2 * 5 / 11)


@pytest.mark.parametrize("name", ["dice_weighted", "dice_foreground", "dice_generalized"])
def test_logits_and_probabilities_inputs_agree(registry: Registry, name: str) -> None:
    logits = torch.randn(2, 3, 4, 6, 6)
    target = torch.randint(0, 3, (2, 4, 6, 6))
    from_logits = registry.build("loss", name)
    from_probabilities = registry.build("loss", name, inputs="probabilities")
    torch.testing.assert_close(
        from_logits(logits, target), from_probabilities(logits.softmax(1), target)
    )


def test_a_bad_inputs_value_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="inputs must be 'logits' or 'probabilities', got 'probs'"):
        registry.build("loss", "dice_weighted", inputs="probs")
