"""The two-stage method: its prediction options, the whole-volume upsampling step 3
trains through, and step 4's bounded cache of Net1's coarse output."""

from __future__ import annotations

import pytest
import torch
from duoseg.core import PredictError, load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.data.grid import upsample_box
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.trainer import Trainer, config_as_dict

from tests.runs import TWO_STAGE

REGISTRY = load_plugins()


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
