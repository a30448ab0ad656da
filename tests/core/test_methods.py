"""The method seam: every registered schedule trains a registered method, each method
trains and predicts through the engine, and mismatches are refused with their values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from duoseg.apps.cli import main
from duoseg.core import ConfigError, LossTerm, Method, PredictError, load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.data.grid import upsample_box
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.inference.windows import StreamedWindows
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.trainer import Trainer, config_as_dict

from tests.core.conftest import SLIDING_WINDOW, TWO_STAGE

REGISTRY = load_plugins()


@pytest.mark.parametrize("name", REGISTRY.names("schedule"))
def test_every_schedule_names_a_method_that_trains_its_stages(name: str) -> None:
    schedule = REGISTRY.build("schedule", name)
    method = REGISTRY.build("method", schedule.method)
    assert isinstance(method, Method)
    for index, stage in enumerate(schedule.stages):
        assert stage.kind in method.stage_kinds, (name, index, stage.kind)
        assert set(stage.train) | set(stage.freeze) <= set(method.roles)


@pytest.mark.parametrize("name", REGISTRY.names("method"))
def test_every_method_declares_roles_and_stage_kinds(name: str) -> None:
    method = REGISTRY.build("method", name)
    assert method.roles and method.stage_kinds
    assert len(set(method.roles)) == len(method.roles)


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


def test_a_method_that_does_not_train_the_schedules_stages_is_refused(cache, tmp_path) -> None:
    config_path = tmp_path / "c.toml"
    config_path.write_text(TWO_STAGE)
    settings = [f"data.cache={str(cache)!r}", "method.component=resampled"]
    config = load_config(config_path, settings)
    with pytest.raises(ConfigError, match=r"networks.unet3d is missing; the method 'resampled'"):
        Trainer(config, REGISTRY, tmp_path / "run", source="c.toml",
                raw_config=config_as_dict(config))  # fmt: skip
    text = SLIDING_WINDOW.replace("fullres_unet3d", "wang2018").replace(
        "params = { iterations = 2, subvolume_sizes = [16, 24] }", ""
    )
    config_path.write_text(text)
    config = load_config(config_path, [f"data.cache={str(cache)!r}"])
    with pytest.raises(
        ConfigError,
        match=r"schedule.stages\[0\].kind = 'net1_coarse': method sliding_window trains stages "
        r"of kind 'patches'",
    ):
        Trainer(config, REGISTRY, tmp_path / "run2", source="c.toml",
                raw_config=config_as_dict(config))  # fmt: skip


def test_a_network_outside_the_methods_roles_is_refused(cache, tmp_path) -> None:
    config_path = tmp_path / "c.toml"
    config_path.write_text(TWO_STAGE + '[networks.extra]\ncomponent = "unet3d"\n')
    config = load_config(config_path, [f"data.cache={str(cache)!r}"])
    with pytest.raises(ConfigError, match=r"networks.extra: the method 'two_stage' has roles "
                       r"\['net1', 'net2'\]"):  # fmt: skip
        Trainer(config, REGISTRY, tmp_path / "run", source="c.toml",
                raw_config=config_as_dict(config))  # fmt: skip


def test_method_option_values_are_checked_by_type_and_range(two_stage_run, cache) -> None:
    model = load_model(two_stage_run, REGISTRY)
    case = open_cache(cache, REGISTRY).case("ct_train_1002")

    def predict(**option: object) -> None:
        predict_case(model, case, MemorySink(), Options(method=option))

    with pytest.raises(PredictError, match=r"flip_tta = 'yes' must be of type bool, not str"):
        predict(flip_tta="yes")
    with pytest.raises(
        PredictError,
        match=r"ct_train_1002: method option roi = \[\[0, 8\], \[0, 99\], \[0, 8\]\]: axis y "
        r"\[0, 99\) must satisfy 0 <= start < stop <= 40",
    ):
        predict(roi=[[0, 8], [0, 99], [0, 8]])
    with pytest.raises(PredictError, match=r"roi = \[\[0, 8\]\] must be \[\[z0, z1\]"):
        predict(roi=[[0, 8]])


def test_sliding_window_options_are_checked(sliding_window_run, cache) -> None:
    model = load_model(sliding_window_run, REGISTRY)
    case = open_cache(cache, REGISTRY).case("ct_train_1002")
    with pytest.raises(PredictError, match=r"overlap = 1.5 must lie in \[0, 1\)"):
        predict_case(model, case, MemorySink(), Options(method={"overlap": 1.5}))
    with pytest.raises(PredictError, match=r"window = \[8, 0, 8\] must be three sizes >= 1"):
        predict_case(model, case, MemorySink(), Options(method={"window": [8, 0, 8]}))


def test_a_stage_scoring_a_network_its_kind_does_not_run_is_refused(cache, tmp_path) -> None:
    config_path = tmp_path / "c.toml"
    config_path.write_text(TWO_STAGE)
    config = load_config(config_path, [f"data.cache={str(cache)!r}"])
    trainer = Trainer(config, REGISTRY, tmp_path / "run", source="c.toml",
                      raw_config=config_as_dict(config))  # fmt: skip
    first = trainer.schedule.stages[0]  # net1_coarse: only Net1 runs
    wrong = dataclasses.replace(first, losses=(LossTerm("net2", "dice_ce"),))
    trainer.schedule = dataclasses.replace(trainer.schedule, stages=(wrong,))
    batch = next(trainer._batches(wrong, TrainState()))
    optimizer = trainer._optimizer(wrong)
    with pytest.raises(ConfigError, match=r"stage '1_localise' scores network 'net2', but "
                       r"method 'two_stage' gives it no output in stages of kind "
                       r"'net1_coarse' \(outputs: \['net1'\]\)"):  # fmt: skip
        trainer._train_step(wrong, batch, optimizer, TrainState())


def test_the_whole_volume_upsampling_is_the_interpolation_itself() -> None:
    coarse = torch.rand(3, 5, 6, 7, requires_grad=True)
    shape = (20, 18, 21)
    expected = torch.nn.functional.interpolate(
        coarse[None], shape, mode="trilinear", align_corners=False
    )[0]
    got = upsample_box(coarse, shape, (0, 0, 0), shape, [0.0, 0.0, 0.0])
    assert torch.equal(got, expected)
    got.sum().backward()  # step 3 trains Net1 through it
    assert coarse.grad is not None and float(coarse.grad.abs().sum()) > 0


def test_step4_keeps_net1s_coarse_output_for_at_most_the_configured_cases(cache, tmp_path) -> None:
    config_path = tmp_path / "c.toml"
    config_path.write_text(TWO_STAGE + "[method]\ncomponent = 'two_stage'\n"
                           "params = { coarse_cache_cases = 2 }\n")  # fmt: skip
    settings = [f"data.cache={str(cache)!r}", "schedule.params.iterations=[1, 1, 1, 12]"]
    config = load_config(config_path, settings)
    trainer = Trainer(config, REGISTRY, tmp_path / "run", source="c.toml",
                      raw_config=config_as_dict(config))  # fmt: skip
    stage = trainer.schedule.stages[3]
    seen: set[str] = set()
    with torch.no_grad():
        for _, batch in zip(range(12), trainer._batches(stage, TrainState()), strict=False):
            trainer._forward(stage, batch, torch.Generator().manual_seed(0))
            seen |= set(batch["case_id"])
            assert len(trainer.method._coarse) <= 2  # type: ignore[attr-defined]
    assert len(seen) > 2, seen  # more cases than kept went through
