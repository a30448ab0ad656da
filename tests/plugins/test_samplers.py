from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.errors import ConfigError, DataError
from duoseg.phantoms import phantom_cache
from torch.utils.data import DataLoader


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("samplers")
    return phantom_cache(root, cases=3, size=(64, 56, 40), seed=2, chunks=(8, 32, 32))


@pytest.mark.slow
def test_class_balanced_centres_are_uniform_over_classes(registry: Registry, cache_path) -> None:
    """8000 draws: every class's share of patch centres within 2 points of 1/8."""
    sampler = registry.build("sampler", "class_balanced", sizes=[9], seed=11)
    cache = open_cache(cache_path, registry)
    centres = np.zeros(8)
    for index in range(8000):
        case = cache.case(cache.cases()[index % 3])
        sample = sampler.sample(case, epoch=0, index=index)
        centres[sample.label[4, 4, 4]] += 1
    shares = centres / centres.sum()
    assert np.abs(shares - 1 / 8).max() < 0.02, shares


def test_class_weights_bias_the_draw(registry: Registry, cache_path) -> None:
    sampler = registry.build(
        "sampler", "class_balanced", sizes=[3], class_weights=[0, 0, 0, 1, 0, 0, 0, 0]
    )
    case = open_cache(cache_path, registry).case("ct_train_1001")
    assert {int(sampler.sample(case, epoch=0, index=i).label[1, 1, 1]) for i in range(50)} == {3}


def test_a_uniform_fraction_shows_the_background(registry: Registry, cache_path) -> None:
    """With uniform_fraction 1 the centres land on background as often as the uniform
    sampler's; with 0.5 about half as often, against 1/8 for class balancing alone."""
    case = open_cache(cache_path, registry).case("ct_train_1001")

    def centres(name: str, **params: float) -> list[int]:
        sampler = registry.build("sampler", name, sizes=[3], seed=4, **params)
        return [int(sampler.sample(case, epoch=0, index=i).label[1, 1, 1]) for i in range(400)]

    uniform = centres("uniform").count(0) / 400
    assert abs(centres("class_balanced", uniform_fraction=1.0).count(0) / 400 - uniform) < 0.05
    half = centres("class_balanced", uniform_fraction=0.5).count(0) / 400
    assert abs(half - (uniform + 1 / 8) / 2) < 0.07, (half, uniform)
    with pytest.raises(ConfigError, match=r"uniform_fraction must lie in \[0, 1\], got 1.5"):
        registry.build("sampler", "class_balanced", uniform_fraction=1.5)


def test_axial_stacks_take_a_uniform_fraction_too(registry: Registry, cache_path) -> None:
    case = open_cache(cache_path, registry).case("ct_train_1001")

    def background(**params: float) -> float:
        sampler = registry.build("sampler", "axial_stack", k=3, crop=[3, 3], seed=5, **params)
        labels = [int(sampler.sample(case, epoch=0, index=i).label[0, 1, 1]) for i in range(300)]
        return labels.count(0) / 300

    assert background(uniform_fraction=1.0) > 0.6
    assert background() < 0.25  # class-balanced: 1 in 8
    with pytest.raises(ConfigError, match=r"uniform_fraction must lie in \[0, 1\], got -0.1"):
        registry.build("sampler", "axial_stack", uniform_fraction=-0.1)


def test_patch_size_is_drawn_per_batch(registry: Registry, cache_path) -> None:
    sampler = registry.build("sampler", "uniform", sizes=[8, 16, 24], batch_size=4)
    case = open_cache(cache_path, registry).case("ct_train_1001")
    sizes = [sampler.sample(case, epoch=0, index=i).image.shape[1] for i in range(40)]
    batches = [set(sizes[i : i + 4]) for i in range(0, 40, 4)]
    assert all(len(b) == 1 for b in batches) and len(set(sizes)) > 1


def test_a_patch_larger_than_the_case_needs_padding(registry: Registry, cache_path) -> None:
    sampler = registry.build("sampler", "class_balanced", sizes=[128], allow_padding=False)
    case = open_cache(cache_path, registry).case("ct_train_1001")
    with pytest.raises(
        DataError, match=r"patch size 128 exceeds case ct_train_1001 of shape \(40, 56, 64\)"
    ):
        sampler.sample(case, epoch=0, index=0)
    padded = registry.build("sampler", "class_balanced", sizes=[128]).sample(case, epoch=0, index=0)
    assert padded.image.shape == (1, 128, 128, 128) and padded.image.min() == -1


def test_axial_stacks_label_their_central_slice(registry: Registry, cache_path) -> None:
    sampler = registry.build("sampler", "axial_stack", k=9)
    case = open_cache(cache_path, registry).case("ct_train_1002")
    image, label = case.image[...], case.label[...]
    for index in range(10):
        sample = sampler.sample(case, epoch=0, index=index)
        assert sample.image.shape == (1, 9, 56, 64) and sample.label.shape == (1, 56, 64)
        centre = sample.origin[0] + 4
        np.testing.assert_array_equal(sample.label[0], label[centre])
        if sample.origin[0] >= 0 and sample.origin[0] + 9 <= 40:
            np.testing.assert_array_equal(sample.image[0], image[sample.origin[0] : centre + 5])
    with pytest.raises(DataError, match="axial_stack needs an odd number of slices k, got k=8"):
        registry.build("sampler", "axial_stack", k=8)


def test_whole_coarse_returns_the_coarse_level(registry: Registry, cache_path) -> None:
    case = open_cache(cache_path, registry).case("ct_train_1003")
    sample = registry.build("sampler", "whole_coarse").sample(case, epoch=3, index=7)
    assert sample.level == "coarse"
    np.testing.assert_array_equal(sample.label, case.coarse_label[...])


def test_dataloader_workers_give_the_single_process_samples(registry: Registry, cache_path) -> None:
    sampler = registry.build("sampler", "class_balanced", sizes=[16], seed=4)
    dataset = SampleDataset(cache_path, sampler, length=12, epoch=2)
    single = [dataset[i] for i in range(12)]
    loader = DataLoader(dataset, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    for i, sample in enumerate(single):
        batch = batches[i // 3]
        torch.testing.assert_close(batch["image"][i % 3], sample["image"])
        torch.testing.assert_close(batch["label"][i % 3], sample["label"])
        assert batch["case_id"][i % 3] == sample["case_id"]


def test_a_dataset_refuses_unknown_cases_and_empty_lists(registry: Registry, cache_path) -> None:
    sampler = registry.build("sampler", "uniform", sizes=[8])
    with pytest.raises(DataError, match=r"cases \['nope'\] are not in the cache"):
        SampleDataset(cache_path, sampler, length=1, cases=["nope"])
    with pytest.raises(DataError, match="no cases to sample from"):
        SampleDataset(cache_path, sampler, length=1, cases=[])
