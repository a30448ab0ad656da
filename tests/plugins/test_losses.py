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


@pytest.mark.parametrize("literal", [False, True], ids=["default", "literal"])
def test_weighted_dice_matches_eq1_with_normalised_inverse_counts(
    registry: Registry, literal: bool
) -> None:
    # S = (4/5, 1, 2/3); weights 1/N = (1/2, 1/4, 1/2) normalised to (0.4, 0.2, 0.4).
    # With one-hot predictions and every class present both forms agree.
    loss = build(registry, "dice_weighted", smooth=0.0, literal=literal)
    expected = 1 - (0.4 * 0.8 + 0.2 * 1.0 + 0.4 * 2 / 3)
    assert float(loss(one_hot(PREDICTED, 3), TARGET)) == pytest.approx(expected)
    without_background = build(
        registry, "dice_weighted", smooth=0.0, include_background=False, literal=literal
    )
    assert float(without_background(one_hot(PREDICTED, 3), TARGET)) == pytest.approx(2 / 9)


def test_weighted_dice_scores_false_alarms_of_absent_classes(registry: Registry) -> None:
    predicted = PREDICTED.clone()
    predicted[0, 1, 3] = 3  # class 3 is absent from the target but predicted once
    loss = build(registry, "dice_weighted", smooth=1.0)
    # S = (1, 1, 3/4) for the present classes, weights (1/2, 1/4, 1/2); the absent
    # class scores m / (1 + m) with m = 0.02 * 8 voxels, weighted 1/2 like the rarest.
    alarm = 0.16 / (1 + 0.16)
    expected = 1 - (0.5 * 1 + 0.25 * 1 + 0.5 * 0.75 + 0.5 * alarm) / 1.75
    assert float(loss(one_hot(predicted, 4), TARGET)) == pytest.approx(expected)


def test_literal_weighted_dice_gives_absent_classes_no_weight(registry: Registry) -> None:
    predicted = PREDICTED.clone()
    predicted[0, 1, 3] = 3  # class 3 is absent from the target but predicted once
    loss = build(registry, "dice_weighted", smooth=1.0, literal=True)
    # S = (1, 1, 3/4) for the present classes; weights (1/2, 1/4, 1/2) normalised by 5/4
    expected = 1 - (2 * 1 + 1 * 1 + 2 * 0.75) / 5
    assert float(loss(one_hot(predicted, 4), TARGET)) == pytest.approx(expected)


def false_alarm_example(fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A 16^3 patch of 8 classes holding 64 voxels of class 1, the rest background;
    the prediction labels ``fraction`` of the background as the absent class 2."""
    target = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    target.view(-1)[:64] = 1
    predicted = target.clone()
    background = (target.view(-1) == 0).nonzero()[:, 0]
    predicted.view(-1)[background[: round(fraction * background.numel())]] = 2
    return one_hot(predicted, 8).double(), target


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_false_alarms_of_an_absent_class_cost(registry: Registry, fraction: float) -> None:
    loss = build(registry, "dice_weighted")
    exact, target = false_alarm_example(0.0)
    assert float(loss(exact, target)) == pytest.approx(0.0, abs=1e-12)
    increase = float(loss(false_alarm_example(fraction)[0], target))
    assert increase >= 0.1, f"{fraction:.0%} false alarms raise the loss by only {increase:.4f}"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_literal_form_barely_sees_false_alarms(registry: Registry, fraction: float) -> None:
    # The paper's literal Eq. 1: an absent class weighs 0, background ~1/N_0 (measured
    # increases 0.0008, 0.005, 0.013).
    loss = build(registry, "dice_weighted", literal=True)
    exact, target = false_alarm_example(0.0)
    increase = float(loss(false_alarm_example(fraction)[0], target) - loss(exact, target))
    assert 0 < increase < 0.02


def soft_coarse_target() -> torch.Tensor:
    """Class fractions from 2x2x2 area pooling of a random 16^3 label map of 8 classes,
    with classes 4, 6, 7 absent and class 5 a sliver of one fine voxel (soft count 1/8)."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 4, (1, 4, 4, 4), generator=generator)
    labels = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    noise = torch.randint(0, 4, labels.shape, generator=generator)
    labels = torch.where(torch.rand(labels.shape, generator=generator) < 0.2, noise, labels)
    labels[0, 0, 0, 0] = 5
    return F.avg_pool3d(one_hot(labels, 8).double(), 2)


def test_the_exact_soft_target_is_the_minimum(registry: Registry) -> None:
    loss = build(registry, "dice_weighted")
    target = soft_coarse_target()
    assert 0 < float(target[:, 5].sum()) < 1
    best = float(loss(target, target))
    assert best == pytest.approx(0.0, abs=1e-12)
    suppressed = target.clone()
    suppressed[:, 0] += suppressed[:, 5]
    suppressed[:, 5] = 0
    perturbed = {
        "sliver suppressed": suppressed,
        "argmax one-hot": one_hot(target.argmax(1), 8).double(),
    }
    generator = torch.Generator().manual_seed(1)
    for draw in range(5):
        for mix in (0.01, 0.1, 0.5, 1.0):
            other = torch.rand(target.shape, generator=generator, dtype=torch.float64)
            other = other / other.sum(1, keepdim=True)
            perturbed[f"mix {mix} of random {draw}"] = (1 - mix) * target + mix * other
    for name, probabilities in perturbed.items():
        value = float(loss(probabilities, target))
        assert value > best + 1e-6, f"{name}: loss {value} not above the target's {best}"


def test_a_sliver_weighs_no_more_than_a_class_at_the_floor(registry: Registry) -> None:
    # 100 voxels, so the floor is 0.02 * 100 = 2: class 1 holds 2 voxels, class 2 only
    # a tenth of one. Missing either costs the same. The literal 1/N_c (counts clamped
    # at 1) weighs the sliver 2/3, and its linear Dice scores the exact sliver 0.1.
    target = one_hot(torch.zeros(1, 10, 10, dtype=torch.long), 3).double()
    target[0, :, 0, :2] = torch.tensor([0.0, 1.0, 0.0])[:, None]
    target[0, :, 5, 5] = torch.tensor([0.9, 0.0, 0.1])
    miss_class, miss_sliver = target.clone(), target.clone()
    miss_class[0, :, 0, :2] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    miss_sliver[0, :, 5, 5] = torch.tensor([1.0, 0.0, 0.0])
    loss = build(registry, "dice_weighted", smooth=0.0, include_background=False)
    assert float(loss(miss_class, target)) == pytest.approx(0.5)
    assert float(loss(miss_sliver, target)) == pytest.approx(0.5)
    literal = build(registry, "dice_weighted", smooth=0.0, include_background=False, literal=True)
    assert float(literal(miss_class, target)) == pytest.approx(1 - 2 / 3 * 0.1)
    assert float(literal(miss_sliver, target)) == pytest.approx(1 - 1 / 3)


@pytest.mark.parametrize("literal", [False, True], ids=["default", "literal"])
def test_weighted_batch_dice_pools_the_batch(registry: Registry, literal: bool) -> None:
    # Pooling the batch equals one sample made of both side by side; sample 0 lacks
    # class 2 and predicts it, which is a false alarm per sample but not pooled.
    target = torch.tensor([[[0, 0, 1, 1]], [[0, 2, 2, 1]]])
    predicted = torch.tensor([[[0, 2, 1, 1]], [[0, 2, 0, 1]]])
    pooled = build(registry, "dice_weighted", batch_dice=True, literal=literal)
    joined = build(registry, "dice_weighted", literal=literal)
    side_by_side = torch.cat([one_hot(predicted[0:1], 3), one_hot(predicted[1:2], 3)], -1)
    expected = joined(side_by_side, torch.cat([target[0:1], target[1:2]], -1))
    torch.testing.assert_close(pooled(one_hot(predicted, 3), target), expected)
    per_sample = build(registry, "dice_weighted", literal=literal)
    assert float(per_sample(one_hot(predicted, 3), target)) != pytest.approx(float(expected))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_fraction": -0.01}, r"min_fraction must be in \(0, 1\], got -0.01"),
        ({"min_fraction": 0.0}, r"min_fraction must be in \(0, 1\], got 0.0"),
        ({"min_fraction": 1.5}, r"min_fraction must be in \(0, 1\], got 1.5"),
        ({"smooth": -1.0}, r"smooth must be >= 0, got -1.0"),
    ],
)
def test_weighted_dice_refuses_bad_parameters(
    registry: Registry, params: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(registry, "dice_weighted", **params)


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


@pytest.mark.parametrize("schedule", ["wang2018", "baseline_unet3d"])
def test_schedules_reach_the_literal_eq1_through_loss_params(registry, schedule) -> None:
    built = registry.build("schedule", schedule, loss_params={"literal": True})
    terms = [t for stage in built.stages for t in stage.losses if t.component == "dice_weighted"]
    assert terms and all(t.params == {"literal": True} for t in terms)
    assert registry.build("loss", "dice_weighted", **terms[0].params).literal
