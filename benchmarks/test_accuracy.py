"""Peer accuracy: duoseg's ``wang2018`` and its 2 mm baseline beside MONAI's 3D U-Net,
each trained for the same number of iterations on the same phantom cache with the same
loss family (Dice + cross-entropy) and optimiser, and evaluated at full resolution on
the same held-out phantoms (MONAI by sliding windows, as its users run it).

The budget is a fraction of the demo's so the suite stays short; ``mean_dice`` in
``extra_info`` is over the test cases' classes (seven structures) and the test cases.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from duoseg.apps.demo import DemoData, Preset, prepare_data, train
from duoseg.apps.phantom import SMALL_SIZE
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.inference.outputs import MemorySink
from duoseg.core.inference.streaming import Options, load_model, predict_case
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.training.evaluation import dice_per_class

STEPS = (15, 80, 3, 150)  # wang2018's four steps; the others train sum(STEPS) iterations
ITERATIONS = sum(STEPS)
PRESET = Preset("accuracy", SMALL_SIZE, train_cases=4, test_cases=2)
Predictor = Callable[[CacheCase], np.ndarray]


@pytest.fixture(scope="module")
def data(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return prepare_data(tmp_path_factory.mktemp("accuracy"), PRESET, registry)


@pytest.fixture(scope="module")
def test_cases(data: DemoData, registry: Registry) -> list[CacheCase]:
    """The held-out phantoms as one more cache: every model reads the same arrays."""
    target = data.cache.with_name("test.zarr")
    build_cache(data.test_source, target, importer=registry.build("importer", "mmwhs"),
                store=registry.build("store", "zarr"))  # fmt: skip
    cache = open_cache(target, registry)
    return [cache.case(c) for c in cache.cases()]


def duoseg_model(name: str, overrides: list[str]) -> Callable[..., Predictor]:
    def fit(data: DemoData, out: Path, registry: Registry) -> Predictor:
        run = train(name, data, out / name, overrides, device="cpu", registry=registry)
        model = load_model(run, registry)

        def predict(case: CacheCase) -> np.ndarray:
            sink = MemorySink()
            predict_case(model, case, sink, Options())
            return sink.labels

        return predict

    return fit


def monai_unet(data: DemoData, out: Path, registry: Registry) -> Predictor:
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=8, channels=(8, 16, 32, 64),
               strides=(2, 2, 2), num_res_units=1, norm="instance")  # fmt: skip
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    sampler = registry.build("sampler", "class_balanced", sizes=[64], batch_size=2)
    cases = [c for c in open_cache(data.cache, registry).cases() if c != data.validation]
    loader = torch.utils.data.DataLoader(
        SampleDataset(data.cache, sampler, length=2 * ITERATIONS, cases=cases), batch_size=2
    )
    net.train()
    for batch in loader:
        optimiser.zero_grad()
        loss(net(batch["image"]), batch["label"][:, None]).backward()
        optimiser.step()
    net.eval()

    def predict(case: CacheCase) -> np.ndarray:
        image = torch.as_tensor(case.image[...], dtype=torch.float32)[None, None]
        with torch.no_grad():
            scores = sliding_window_inference(image, (96, 96, 96), 4, net, overlap=0.25,
                                              mode="gaussian")  # fmt: skip
        return scores[0].argmax(0).numpy().astype(np.uint8)

    return predict


MODELS: dict[str, tuple[Callable[..., Predictor], str | None]] = {
    "duoseg wang2018": (
        duoseg_model("two_stage", [f"schedule.params.iterations={list(STEPS)}"]),
        None,
    ),
    "duoseg baseline": (
        duoseg_model("baseline", [f"schedule.params.iterations={ITERATIONS}"]),
        None,
    ),
    "MONAI UNet": (monai_unet, "monai"),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_peer_accuracy(benchmark, registry: Registry, data, test_cases, model) -> None:
    fit, needs = MODELS[model]
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip("peers extra not installed")
    out = data.cache.parent / "runs"
    predict = benchmark.pedantic(fit, args=(data, out, registry), rounds=1, iterations=1)
    dice: dict[str, list[float]] = {}  # the test cases' classes, from their own records
    for case in test_cases:
        scores = dice_per_class(predict(case), case.label[...], len(case.meta.class_names))
        for name, score in zip(case.meta.class_names[1:], scores, strict=True):
            dice.setdefault(name, []).append(0.0 if score is None else score)
    per_structure: dict[str, Any] = {s: float(np.mean(v)) for s, v in dice.items()}
    benchmark.extra_info.update(
        model=model, iterations=ITERATIONS, train_seconds=benchmark.stats.stats.min,
        mean_dice=float(np.mean(list(per_structure.values()))), dice=per_structure,
    )  # fmt: skip
