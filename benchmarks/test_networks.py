"""Throughput of Net1, Net2 and unet3d on CPU, and Net2's stack-vs-separate speedup."""

from __future__ import annotations

import pytest
import torch
from duoseg.core import Registry, network_cost

# Sizes of a 512x512x~256 CT: Net1 sees it at 3 mm, unet3d at 2 mm, Net2 a 256^2 ROI.
SHAPES = {
    "net1": (1, 1, 48, 96, 96),
    "unet3d": (1, 1, 64, 128, 128),
    "net2": (1, 2, 32 + 8, 256, 256),
}
Z, K = 32, 9


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_throughput(benchmark, registry: Registry, matmul_gflops: float, name) -> None:
    torch.manual_seed(0)
    net = registry.build("network", name).eval()
    x = torch.randn(SHAPES[name])
    cost = network_cost(net, SHAPES[name])
    with torch.no_grad():
        benchmark.pedantic(net, args=(x,), rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.min
    gflops = cost.flops / seconds / 1e9
    benchmark.extra_info.update(
        input_shape=list(SHAPES[name]),
        parameters=cost.parameters,
        flops_per_output_voxel=cost.flops_per_output_voxel,
        peak_activation_mib=cost.peak_activation_bytes / 2**20,
        voxels_per_second=cost.output_voxels / seconds,
        gflops=gflops,
        matmul_gflops=matmul_gflops,
        fraction_of_matmul=gflops / matmul_gflops,
    )


@pytest.mark.parametrize("mode", ["stack", "separate"])
def test_net2_stack_against_separate_calls(benchmark, registry: Registry, mode: str) -> None:
    """One pass over Z+K-1 slices against Z passes over K slices (Z=32, K=9, 256^2)."""
    torch.manual_seed(0)
    net = registry.build("network", "net2", k=K).eval()
    x = torch.randn(1, 2, Z + K - 1, 256, 256)
    windows = [x[:, :, i : i + K].contiguous() for i in range(Z)]
    stack_flops = network_cost(net, tuple(x.shape)).flops
    separate_flops = Z * network_cost(net, (1, 2, K, 256, 256)).flops

    def run() -> None:
        with torch.no_grad():
            if mode == "stack":
                net(x)
            else:
                for window in windows:
                    net(window)

    benchmark.pedantic(run, rounds=2, warmup_rounds=1)
    benchmark.extra_info.update(
        flops=stack_flops if mode == "stack" else separate_flops,
        flop_ratio_separate_over_stack=separate_flops / stack_flops,
    )
