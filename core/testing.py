"""Conformance suites: the contract every component of a kind keeps.

A plugin's tests subclass these (they need pytest) and set ``name``::

    from duoseg.core.testing import NetworkConformance

    class TestTinyUNet(NetworkConformance):
        name = "tiny_unet"
        params = {"width": 4}

duoseg runs the same classes over every registered component.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .errors import InputShapeError
from .loss import SegmentationLoss
from .network import SegmentationNetwork
from .registry import Registry, load_plugins
from .sampler import IMAGE_PAD, LABEL_PAD, Sampler
from .weights import load_weights, save_weights


class _ComponentSuite:
    kind: ClassVar[str]
    name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls) -> Registry:
        return load_plugins()

    @pytest.fixture
    def component_name(self) -> str:
        return self.name

    def build(self, registry: Registry, component_name: str, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return registry.build(self.kind, component_name, **self.params)


class NetworkConformance(_ComponentSuite):
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


class LossConformance(_ComponentSuite):
    """Bounded values, zero for a perfect prediction, finite gradients, clear errors."""

    kind = "loss"
    classes: ClassVar[int] = 4

    @pytest.fixture
    def loss(self, registry: Registry, component_name: str) -> SegmentationLoss:
        loss: SegmentationLoss = self.build(registry, component_name)
        return loss

    def scores(self, loss: SegmentationLoss, shape: tuple[int, ...]) -> torch.Tensor:
        logits = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        return logits if loss.inputs == "logits" else logits.softmax(1)

    def labels(self, shape: tuple[int, ...], absent: int | None = None) -> torch.Tensor:
        high = self.classes - (absent is not None)
        target = torch.randint(0, high, shape, generator=torch.Generator().manual_seed(3))
        if absent is not None:
            target[target >= absent] += 1
        return target

    def perfect(self, loss: SegmentationLoss, target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        return onehot * 40 if loss.inputs == "logits" else onehot

    def test_is_a_segmentation_loss(self, loss: SegmentationLoss) -> None:
        assert isinstance(loss, SegmentationLoss)

    @pytest.mark.parametrize("spatial", [(6, 8, 8), (8, 8)], ids=["3d", "2d"])
    def test_value_lies_in_the_documented_range(
        self, loss: SegmentationLoss, spatial: tuple[int, ...]
    ) -> None:
        value = loss(self.scores(loss, (2, self.classes, *spatial)), self.labels((2, *spatial)))
        low, high = loss.value_range
        assert value.dim() == 0 and low <= float(value) <= high

    def test_perfect_prediction_gives_zero(self, loss: SegmentationLoss) -> None:
        target = self.labels((2, 6, 8, 8))
        assert float(loss(self.perfect(loss, target), target)) == pytest.approx(0.0, abs=1e-4)

    def test_gradients_are_finite_when_a_class_is_absent(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8)).requires_grad_()
        loss(scores, self.labels((2, 6, 8, 8), absent=self.classes - 1)).backward()
        assert scores.grad is not None and torch.isfinite(scores.grad).all()

    def test_one_hot_and_integer_targets_agree(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8))
        target = self.labels((2, 6, 8, 8))
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        torch.testing.assert_close(loss(scores, onehot), loss(scores, target))

    def test_rejects_a_label_out_of_range(self, loss: SegmentationLoss) -> None:
        target = self.labels((1, 4, 4, 4))
        target[0, 0, 0, 0] = self.classes
        limit = f"0..{self.classes - 1}"
        with pytest.raises(InputShapeError, match=f"label value {self.classes} outside {limit}"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), target)

    def test_rejects_a_mismatched_target(self, loss: SegmentationLoss) -> None:
        with pytest.raises(InputShapeError, match="does not match scores"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), self.labels((1, 4, 4, 5)))


class SamplerConformance(_ComponentSuite):
    """Reproducible draws, samples that match the cache (padded as documented)."""

    kind = "sampler"
    draws: ClassVar[int] = 12

    @pytest.fixture(scope="class")
    @classmethod
    def phantom_cache(cls, tmp_path_factory: pytest.TempPathFactory) -> Any:
        """A Zarr cache of two small phantom cases, built once per class."""
        from .cache import open_cache
        from .phantom import phantom_cache

        root = tmp_path_factory.mktemp("sampler-cache")
        return open_cache(
            phantom_cache(root, cases=2, size=(48, 40, 32), seed=5, chunks=(8, 16, 16))
        )

    @pytest.fixture
    def sampler(self, registry: Registry, component_name: str) -> Sampler:
        params = (
            {"sizes": (16, 24)} if "sizes" in registry.parameters("sampler", component_name) else {}
        )
        sampler: Sampler = registry.build("sampler", component_name, **{**params, **self.params})
        return sampler

    def test_is_a_sampler(self, sampler: Sampler) -> None:
        assert isinstance(sampler, Sampler)

    def test_the_same_seed_epoch_and_index_give_the_same_sample(
        self, sampler: Sampler, phantom_cache: Any
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[0])
        for index in range(self.draws):
            a = sampler.sample(case, epoch=1, index=index)
            b = sampler.sample(case, epoch=1, index=index)
            assert a.origin == b.origin
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.label, b.label)

    def test_samples_equal_the_cache_padded_as_documented(
        self, sampler: Sampler, phantom_cache: Any
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[1])
        for index in range(self.draws):
            sample = sampler.sample(case, epoch=0, index=index)
            coarse = sample.level == "coarse"
            image = (case.coarse_image if coarse else case.image)[...].astype(np.float32)
            label = (case.coarse_label if coarse else case.label)[...]
            assert sample.image.dtype == np.float32 and sample.image.ndim == 4
            expected = _crop(image, sample.origin, sample.image.shape[1:], IMAGE_PAD)
            np.testing.assert_array_equal(sample.image[0], expected)
            depth = sample.label.shape[0]
            offset = (sample.image.shape[1] - depth) // 2
            origin = (sample.origin[0] + offset, *sample.origin[1:])
            np.testing.assert_array_equal(
                sample.label, _crop(label, origin, sample.label.shape, LABEL_PAD)
            )


def _crop(
    array: np.ndarray[Any, Any], origin: tuple[int, ...], size: tuple[int, ...], fill: float
) -> np.ndarray[Any, Any]:
    # Independent of read_padded, which is what is checked: pad everywhere, then slice.
    padded = np.pad(array, [(s, s) for s in size], constant_values=fill)
    return padded[tuple(slice(o + s, o + 2 * s) for o, s in zip(origin, size, strict=True))]
