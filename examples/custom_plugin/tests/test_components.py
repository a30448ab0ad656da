"""The example plugin's components keep duoseg's contracts: a few lines each."""

from __future__ import annotations

import pytest
import torch
from duoseg.core.testing import LossConformance, NetworkConformance


class TestResUNet3d(NetworkConformance):
    name = "resunet3d"
    params = {"width": 4}


class TestTversky(LossConformance):
    name = "tversky"


def test_tversky_with_equal_weights_is_the_soft_dice() -> None:
    from duoseg_example_plugin.tversky import TverskyLoss

    target = torch.tensor([[[1, 1, 0, 0]]])
    scores = torch.tensor([[[[0.0, 0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0, 0.0]]]])
    loss = TverskyLoss("probabilities", alpha=0.5, beta=0.5, smooth=0.0)
    # foreground: tp = 1, fp = 1, fn = 1 -> Dice 2 / 4
    assert float(loss(scores, target)) == pytest.approx(0.5)
