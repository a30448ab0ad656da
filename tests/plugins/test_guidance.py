"""Net2's guidance: what it sees of Net1's output."""

from __future__ import annotations

import pytest
import torch
from duoseg.core.errors import ConfigError
from duoseg.plugins.methods.guidance import guidance_of, guide


def test_guidance_is_read_from_the_input_channels() -> None:
    assert guidance_of(2, classes=8) == "foreground"
    assert guidance_of(9, classes=8) == "probabilities"


def test_other_input_channels_are_refused_with_both_choices() -> None:
    with pytest.raises(
        ConfigError,
        match=r"networks.net2 takes 3 input channels; .* foreground \(2\) or its 8 class "
        r"probabilities \(9\)",
    ):
        guidance_of(3, classes=8)


@pytest.mark.parametrize("shape", [(2, 8, 3, 4, 5), (8, 3, 4, 5)])
def test_guide_takes_the_foreground_or_every_probability(shape) -> None:
    probabilities = torch.rand(shape).softmax(-4)
    foreground = guide(probabilities, "foreground")
    assert foreground.shape[-4] == 1
    torch.testing.assert_close(foreground, probabilities[..., 1:, :, :, :].sum(-4, keepdim=True))
    assert guide(probabilities, "probabilities") is probabilities
