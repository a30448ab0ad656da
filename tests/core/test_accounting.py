from __future__ import annotations

import torch
from duoseg.core import SegmentationNetwork, network_cost
from torch import nn


class TwoConvs(SegmentationNetwork):
    def __init__(self) -> None:
        super().__init__(1, 8)
        self.a = nn.Conv3d(1, 8, 3, padding=1)
        self.b = nn.Conv3d(8, 8, 3, padding=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_flops_parameters_and_peak_memory_match_hand_counts() -> None:
    cost = network_cost(TwoConvs(), (1, 1, 32, 32, 32))
    voxels = 32**3
    assert cost.flops == 2 * 27 * (1 * 8 + 8 * 8) * voxels
    assert cost.parameters == (27 * 8 + 8) + (27 * 64 + 8)
    assert cost.output_shape == (1, 8, 32, 32, 32)
    assert cost.flops_per_output_voxel == 2 * 27 * 72
    # conv a's output and relu's output are alive together, then relu's and conv b's.
    assert cost.peak_activation_bytes == 2 * 8 * voxels * 4


def test_accounting_leaves_the_network_where_it_was() -> None:
    net = TwoConvs()
    network_cost(net, (1, 1, 8, 8, 8))
    assert next(net.parameters()).device.type == "cpu"


def test_peak_memory_grows_linearly_with_depth_for_net2(registry) -> None:
    net = registry.build("network", "net2")
    small = network_cost(net, (1, 2, 8 + 16, 64, 64))
    large = network_cost(net, (1, 2, 8 + 32, 64, 64))
    per_slice = (large.peak_activation_bytes - small.peak_activation_bytes) / 16
    assert per_slice > 0
    assert small.flops_per_output_voxel > large.flops_per_output_voxel
