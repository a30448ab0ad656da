"""The sampler contract, on a small phantom cache."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
from duoseg.core.data.cache import open_cache
from duoseg.core.interfaces.sampler import IMAGE_PAD, LABEL_PAD, Sampler
from duoseg.core.interfaces.store import (
    CacheReader,
)
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
    phantom_cache_path,
    session_registry,
)


class SamplerConformance(ComponentSuite):
    """Reproducible draws, samples that match the cache (padded as documented)."""

    kind = "sampler"
    draws: ClassVar[int] = 12

    @pytest.fixture(scope="class")
    @classmethod
    def phantom_cache(
        cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> CacheReader:
        """A Zarr cache of two small phantom cases, built once per session."""

        path = phantom_cache_path(request.config, tmp_path_factory)
        return open_cache(path, session_registry(request.config))

    @pytest.fixture
    def sampler(self, registry: Registry, component_name: str) -> Sampler:
        small = "sizes" in registry.parameters("sampler", component_name)
        params: dict[str, Any] = {"sizes": (16, 24)} if small else {}
        params.update(self.component_params(component_name))
        sampler: Sampler = registry.build("sampler", component_name, **params)
        return sampler

    def test_is_a_sampler(self, sampler: Sampler) -> None:
        assert isinstance(sampler, Sampler)

    def test_the_same_seed_epoch_and_index_give_the_same_sample(
        self, sampler: Sampler, phantom_cache: CacheReader
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[0])
        for index in range(self.draws):
            a = sampler.sample(case, epoch=1, index=index)
            b = sampler.sample(case, epoch=1, index=index)
            assert a.origin == b.origin
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.label, b.label)

    def test_samples_equal_the_cache_padded_as_documented(
        self, sampler: Sampler, phantom_cache: CacheReader
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[1])
        for index in range(self.draws):
            sample = sampler.sample(case, epoch=0, index=index)
            full = sample.level == "full"
            grid = None if full else case.level(sample.level)
            image = (case.image if grid is None else grid.image)[...].astype(np.float32)
            labels = case.label if grid is None else grid.label
            assert labels is not None
            label = labels[...]
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
