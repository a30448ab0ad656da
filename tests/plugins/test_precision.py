"""Every network under autocast and channels-last, on every device present.

CPU runs the same code as CUDA (bf16 autocast is slow but correct on CPU), so the
GPU code path is exercised on machines without one.
"""

from __future__ import annotations

import pytest
import torch
from duoseg.core import Registry, load_weights, save_weights

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["net1", "net2", "unet3d"])
def test_autocast_bf16_agrees_with_fp32(registry: Registry, name: str, device: str) -> None:
    torch.manual_seed(0)
    net = registry.build("network", name, base_width=4).to(device).eval()
    x = torch.randn(net.example_input_shape(1), device=device)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast(device, dtype=torch.bfloat16):
            low = net(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", ["net1", "net2", "unet3d"])
def test_state_dicts_load_across_memory_layouts(registry: Registry, name: str, tmp_path) -> None:
    fast = registry.build("network", name, base_width=4, channels_last=True)
    path = tmp_path / "w.safetensors"
    save_weights(fast, path)
    plain = registry.build("network", name, base_width=4, channels_last=False)
    load_weights(plain, path)
    x = torch.randn(plain.example_input_shape(1))
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), fast.eval()(x), atol=1e-5, rtol=1e-4)
