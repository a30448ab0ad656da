"""The network contract: forward/backward on tiny inputs, the shape contract, a
safetensors round trip."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.registry import Registry
from duoseg.core.training.weights import load_weights, save_weights
from duoseg.testing.suite import (
    ComponentSuite,
)


class NetworkConformance(ComponentSuite):
    """Forward/backward on tiny inputs, the shape contract, safetensors round trip."""

    kind = "network"

    @pytest.fixture
    def network(self, registry: Registry, component_name: str) -> SegmentationNetwork:
        network: SegmentationNetwork = self.build(registry, component_name)
        return network

    @staticmethod
    def example(network: SegmentationNetwork, batch: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return torch.randn(network.example_input_shape(batch), generator=generator)

    def test_is_a_segmentation_network(self, network: SegmentationNetwork) -> None:
        assert isinstance(network, SegmentationNetwork)

    def test_output_shape_contract(self, network: SegmentationNetwork) -> None:
        x = self.example(network)
        with torch.no_grad():
            out = network.eval()(x)
        assert tuple(out.shape) == network.output_shape(tuple(x.shape))
        assert out.shape[1] == network.out_channels
        assert torch.isfinite(out).all()

    def test_backward_gives_finite_gradients(self, network: SegmentationNetwork) -> None:
        out = network.train()(self.example(network))
        target = torch.zeros(out.shape[:1] + out.shape[2:], dtype=torch.long)
        F.cross_entropy(out, target).backward()  # type: ignore[no-untyped-call]
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(bool(g.abs().sum() > 0) for g in grads if g is not None)

    def test_safetensors_round_trip(
        self, network: SegmentationNetwork, registry: Registry, component_name: str, tmp_path: Any
    ) -> None:
        path = tmp_path / "weights.safetensors"
        save_weights(network, path, {"component": component_name})
        other = self.build(registry, component_name, seed=123)
        assert load_weights(other, path)["component"] == component_name
        x = self.example(network, batch=1)
        with torch.no_grad():
            torch.testing.assert_close(other.eval()(x), network.eval()(x))

    def test_channels_last_gives_the_same_scores(self, network: SegmentationNetwork) -> None:
        x = self.example(network, batch=1)
        fast = copy.deepcopy(network).use_channels_last(True).eval()
        plain = copy.deepcopy(network).use_channels_last(False).eval()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)

    def test_rejects_a_wrong_channel_count(self, network: SegmentationNetwork) -> None:
        batch, channels, *spatial = network.example_input_shape(1)
        with pytest.raises(InputShapeError, match=f"expects {channels} input channel"):
            network(torch.zeros(batch, channels + 1, *spatial))

    def test_rejects_a_non_volume(self, network: SegmentationNetwork) -> None:
        with pytest.raises(InputShapeError, match="5-D tensor"):
            network(torch.zeros(1, network.in_channels, 16, 16))
