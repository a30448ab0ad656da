"""The method seam: every registered schedule trains a registered method, and mismatches
between a config's networks, schedule and method are refused with their values."""

from __future__ import annotations

import dataclasses

import pytest
from duoseg.core import ConfigError, LossTerm, Method, load_plugins
from duoseg.core.config import load_config
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.trainer import Trainer, config_as_dict

from tests.runs import SLIDING_WINDOW, TWO_STAGE

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
