from __future__ import annotations

import pytest
import torch
from duoseg.core import InputShapeError, Registry


@pytest.mark.parametrize("name", ["net1", "unet3d"])
@pytest.mark.parametrize("size", [(8, 8, 8), (13, 20, 7), (1, 9, 16)])
def test_any_input_size_gives_scores_of_the_same_size(registry: Registry, name, size) -> None:
    net = registry.build("network", name, base_width=4).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, *size)).shape == (2, 8, *size)


def test_net1_defaults_are_the_papers_configuration(registry: Registry) -> None:
    net = registry.build("network", "net1")
    convs = [
        m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (5,) * 3
    ]
    assert len(convs) == 16  # 4 encoder + 4 decoder blocks of two convolutions
    assert [c.dilation[0] for c in convs[::2]] == [1, 2, 3, 4, 4, 3, 2, 1]
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.2] * 8
    assert (net.in_channels, net.out_channels) == (1, 8)


def test_the_dilation_schedule_is_a_parameter(registry: Registry) -> None:
    net = registry.build("network", "net1", dilations=(2, 4, 6, 8), base_width=4)
    assert [m.dilation[0] for m in net.encoder[3].modules() if isinstance(m, torch.nn.Conv3d)] == [
        8,
        8,
    ]
    with pytest.raises(InputShapeError, match=r"one rate per level \(4\), got \(1, 2\)"):
        registry.build("network", "net1", dilations=(1, 2))


def test_the_baseline_is_a_plain_unet(registry: Registry) -> None:
    net = registry.build("network", "unet3d")
    kernels = {m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv3d)}
    assert kernels == {(3, 3, 3), (1, 1, 1)}
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())


def test_residual_units_add_each_blocks_input(registry: Registry) -> None:
    net = registry.build("network", "unet3d", base_width=4, residual=True, norm="instance").eval()
    skips = [block.skip for block in [*net.encoder, net.bottom, *net.decoder]]
    assert sum(isinstance(s, torch.nn.Conv3d) for s in skips) == 7  # where the widths change
    assert sum(isinstance(s, torch.nn.Identity) for s in skips) == 1  # the bottom block
    block = net.bottom
    x = torch.randn(1, block.body[0].in_channels, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.body(x) + x)
        assert net(torch.randn(1, 1, 12, 8, 8)).shape == (1, 8, 12, 8, 8)


def test_bad_channel_counts_are_refused(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"out_channels >= 2.*out_channels=1"):
        registry.build("network", "net1", classes=1)
