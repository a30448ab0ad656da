"""Net2's guidance: what it sees of Net1's output."""

from __future__ import annotations

import pytest
import torch
from duoseg.core.errors import ConfigError
from duoseg.core.registry import Registry
from duoseg.plugins.methods.guidance import guidance_for, guide


def test_the_guidance_is_what_net2_declares(registry: Registry) -> None:
    for guidance in ("foreground", "probabilities"):
        net2 = registry.build("network", "net2", k=3, base_width=4, guidance=guidance)
        assert guidance_for(net2) == guidance


def test_a_network_that_declares_no_guidance_is_refused_naming_the_choices(
    registry: Registry,
) -> None:
    unet = registry.build("network", "unet3d", base_width=4)
    with pytest.raises(ConfigError, match=r"networks.net2 \(.*\) declares guidance = None; .*"
                       r"\['foreground', 'probabilities'\]"):  # fmt: skip
        guidance_for(unet)


@pytest.mark.parametrize("shape", [(2, 8, 3, 4, 5), (8, 3, 4, 5)])
def test_guide_takes_the_foreground_or_every_probability(shape) -> None:
    probabilities = torch.rand(shape).softmax(-4)
    foreground = guide(probabilities, "foreground")
    assert foreground.shape[-4] == 1
    torch.testing.assert_close(foreground, probabilities[..., 1:, :, :, :].sum(-4, keepdim=True))
    assert guide(probabilities, "probabilities") is probabilities
