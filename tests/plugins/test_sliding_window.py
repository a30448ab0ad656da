"""The sliding-window method: slab-depth invariance, blending, its options, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from duoseg.apps.cli import main
from duoseg.core import PredictError, load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.inference.windows import StreamedWindows

REGISTRY = load_plugins()


def test_the_sliding_window_predicts_the_same_whatever_the_slab_depth(
    sliding_window_run, cache
) -> None:
    model = load_model(sliding_window_run, REGISTRY)
    case = open_cache(cache, REGISTRY).case("ct_train_1002")
    results = []
    for budget in (1, 4096):
        sink = MemorySink()
        report = predict_case(model, case, sink, Options(memory_budget_mib=budget))
        results.append((sink.labels, report.slab))
    (small, few), (large, many) = results
    assert few < case.meta.shape[0] <= many  # several slabs, then one
    np.testing.assert_array_equal(small, large)


def test_the_sliding_window_blends_windows_of_its_network(sliding_window_run, cache) -> None:
    model = load_model(sliding_window_run, REGISTRY)
    case = open_cache(cache, REGISTRY).case("ct_train_1001")
    sink = MemorySink()
    predict_case(model, case, sink, Options(probabilities=True))
    network = model.networks["unet3d"]
    image = torch.as_tensor(case.image[...].astype(np.float32))

    def read(origin, size):  # type: ignore[no-untyped-def]
        return image[tuple(slice(o, o + s) for o, s in zip(origin, size, strict=True))][None]

    windows = StreamedWindows(case.meta.shape, (16, 24, 24), read=read, classes=model.classes,
                              forward=lambda x: network(x).softmax(1), batch=2)  # fmt: skip
    with torch.no_grad():
        expected = windows.slices(0, case.meta.shape[0])
    assert sink.probabilities is not None
    np.testing.assert_allclose(sink.probabilities, expected.numpy(), atol=2e-3)


def test_the_sliding_window_method_through_the_cli(sliding_window_run, cache, tmp_path) -> None:
    out = tmp_path / "pred.zarr"
    assert main(["predict", str(sliding_window_run), str(cache), str(out), "--case",
                 "ct_train_1001", "--method-option", "overlap=0.25"]) == 0  # fmt: skip
    assert main(["predict", str(sliding_window_run), str(cache), str(tmp_path / "p"),
                 "--method-option", "window=[8, 0, 8]"]) == 2  # fmt: skip


def test_sliding_window_options_are_checked(sliding_window_run, cache) -> None:
    model = load_model(sliding_window_run, REGISTRY)
    case = open_cache(cache, REGISTRY).case("ct_train_1002")
    with pytest.raises(PredictError, match=r"overlap = 1.5 must lie in \[0, 1\)"):
        predict_case(model, case, MemorySink(), Options(method={"overlap": 1.5}))
    with pytest.raises(PredictError, match=r"window = \[8, 0, 8\] must be three sizes >= 1"):
        predict_case(model, case, MemorySink(), Options(method={"window": [8, 0, 8]}))
