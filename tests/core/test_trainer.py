"""The trainer: all four stages, exact resume, bad configs, checkpoints' provenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from duoseg.apps.cli import main
from duoseg.core import ConfigError, load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import WeightsError
from duoseg.core.inference.model import load_model
from duoseg.core.training.checkpoint import (
    BEST,
    LAST,
    TrainState,
    load_checkpoint,
    model_checkpoint,
    save_checkpoint,
)
from duoseg.core.training.trainer import Trainer, config_as_dict

CONFIG = """
seed = 3
[data]
validation_cases = ["ct_train_1004"]
[networks.net1]
component = "net1"
params = {{ base_width = 4 }}
[networks.net2]
component = "net2"
params = {{ base_width = 4, k = 3, norm = "instance" }}
[schedule]
component = "wang2018"
[schedule.params]
iterations = {iterations}
subvolume_sizes = [16, 24]
k = 3
stack_crop = [32, 32]
batch_size = 2
lr = 3e-3
[train]
checkpoint_every = 1
"""


def write_config(tmp_path: Path, iterations: str = "[3, 3, 2, 3]", extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(iterations=iterations) + extra)
    return path


def trainer(config_path: Path, cache: Path, out: Path, overrides=()) -> Trainer:
    config = load_config(config_path, [f'data.cache="{cache}"', *overrides])
    return Trainer(
        config, load_plugins(), out, source=str(config_path), raw_config=config_as_dict(config)
    )


def losses(run: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["stage"], r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / LAST, load_plugins()).tensors


@pytest.mark.slow
def test_a_tiny_run_goes_through_all_four_stages_and_beats_chance(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[25, 25, 15, 30]")
    assert main(["train", str(config), "--cache", str(cache), "--out", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows if "validation_mean_dice" in r] == [
        "1_localise", "2_coarse", "3_end_to_end", "4_fine",
    ]  # fmt: skip
    final = [r for r in rows if "validation_mean_dice" in r][-1]["validation_mean_dice"]
    # Chance: labelling voxels at random with the class frequencies gives Dice = frequency.
    label = open_cache(cache).case("ct_train_1004").label[...]
    chance = float(np.mean(np.bincount(label.ravel(), minlength=8)[1:] / label.size))
    assert final > max(5 * chance, 0.05), (final, chance)
    for name in ("last.safetensors", "best.safetensors", "loss.png", "validation.png"):
        assert (tmp_path / "run" / name).exists()


@pytest.mark.parametrize("stop_after", [4, 3], ids=["mid-stage", "stage-boundary"])
def test_a_resumed_run_equals_an_uninterrupted_one(
    cache, tmp_path, monkeypatch, stop_after
) -> None:
    config = write_config(tmp_path)
    trainer(config, cache, tmp_path / "straight").run()

    original = Trainer._after_step
    calls = {"n": 0}

    def interrupt(self, stage, state, optimizer):
        original(self, stage, state, optimizer)
        calls["n"] += 1
        if calls["n"] == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer(config, cache, tmp_path / "resumed").run()
    monkeypatch.setattr(Trainer, "_after_step", original)
    trainer(config, cache, tmp_path / "resumed").run(resume=True)

    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for key in straight:
        if key.startswith("network."):
            torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def scripted_validation(monkeypatch, scores: dict[str, float]) -> None:
    """Each stage's end-of-stage validation score, by stage name."""
    monkeypatch.setattr(Trainer, "_validate", lambda self, stage, state: scores[stage.name])


# Net1's coarse Dice (steps 1-2) above the two-stage model's (steps 3-4): the running
# best over every stage would keep step 1's checkpoint, whose Net2 never trained.
NET1_HIGHER = {"1_localise": 0.9, "2_coarse": 0.8, "3_end_to_end": 0.1, "4_fine": 0.2}


def test_the_best_checkpoint_is_the_final_predictors_best(cache, tmp_path, monkeypatch) -> None:
    scripted_validation(monkeypatch, NET1_HIGHER)
    run = tmp_path / "run"
    state = trainer(write_config(tmp_path, iterations="[1, 1, 1, 1]"), cache, run).run()
    assert (state.best_stage, state.best_score) == ("4_fine", 0.2)
    best, last = (load_checkpoint(run / name, load_plugins()) for name in (BEST, LAST))
    assert best.state.best_stage == "4_fine" and best.state.stage == 4
    for key, value in last.tensors.items():
        if key.startswith("network.net2."):
            torch.testing.assert_close(best.tensors[key], value, rtol=0, atol=0)
    assert model_checkpoint(run) == run / BEST
    assert load_model(run, load_plugins()).checkpoint == run / BEST


def test_a_resumed_run_keeps_comparing_only_final_scores(cache, tmp_path, monkeypatch) -> None:
    scores = {**NET1_HIGHER, "3_end_to_end": 0.3}
    scripted_validation(monkeypatch, scores)
    config, run = write_config(tmp_path, iterations="[1, 1, 1, 1]"), tmp_path / "run"
    trainer(config, cache, run, ["schedule.params.iterations=[1, 1, 1, 0]"]).run()
    assert load_checkpoint(run / BEST, load_plugins()).state.best_stage == "3_end_to_end"
    state = trainer(config, cache, run).run(resume=True)
    assert (state.best_stage, state.best_score) == ("3_end_to_end", 0.3)


def test_a_best_checkpoint_without_its_stage_is_passed_over_for_the_last(
    cache, tmp_path, caplog
) -> None:
    """An older trainer's ``best`` may hold an untrained Net2: ``last`` is the model."""
    run = tmp_path / "run"
    trainer(write_config(tmp_path, iterations="[1, 1, 1, 1]"), cache, run).run()
    old = load_checkpoint(run / BEST, load_plugins())
    networks = {role: load_model(run, load_plugins()).networks[role] for role in ("net1", "net2")}
    save_checkpoint(run / BEST, networks=dict(networks), optimizer=None,
                    state=TrainState(stage=2, best_score=0.9), config=old.config,
                    provenance=old.meta["provenance"], data=old.data)  # fmt: skip
    assert model_checkpoint(run) == run / LAST
    assert "records no best_stage" in caplog.text and f"{run / BEST}" in caplog.text


def test_a_finished_run_can_be_extended(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[1, 1, 1, 1]")
    trainer(config, cache, tmp_path / "run").run()
    longer = trainer(config, cache, tmp_path / "run", ["schedule.params.iterations=[1, 1, 1, 3]"])
    state = longer.run(resume=True)
    assert state.stage == 4


def test_resuming_with_another_config_names_the_key(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[1, 0, 0, 0]")
    trainer(config, cache, tmp_path / "run").run()
    other = trainer(config, cache, tmp_path / "run", ["seed=4"])
    with pytest.raises(ConfigError, match=r"--resume with another config: key 'seed' differs"):
        other.run(resume=True)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        trainer(config, cache, tmp_path / "run").run()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "networks.net2.component=net3",
            r"networks.net2.component = 'net3': unknown network 'net3'",
        ),
        ("schedule.params.k=4", r"schedule.params.k = 4: K must be odd and >= 3"),
        (
            "schedule.params.end_to_end_sizes=[]",
            r"schedule.params.end_to_end_sizes = \[\]: expected one or more positive voxel counts",
        ),
        (
            "schedule.params.subvolume_sizes=[0, 16]",
            r"schedule.params.subvolume_sizes = \[0, 16\]: expected one or more positive",
        ),
        (
            'schedule.params.coarse_views="crops"',
            r"schedule.params.coarse_views = 'crops': expected \"subvolumes\" or \"whole\"",
        ),
        ("networks.net2.params.k=4", r"networks.net2.component = 'net2': Net2 needs an odd number"),
        (
            'schedule.params.loss="dice_wieghted"',
            r"schedule stage '2_coarse': loss of net1 = 'dice_wieghted': unknown loss",
        ),
        ("schedule.params.subvolume_sizes=[64]", None),
        (
            "data.validation_cases=['nope']",
            r"data.validation_cases \['nope'\] are not in the cache",
        ),
    ],
)
def test_bad_configs_fail_before_any_step_naming_the_key(
    cache, tmp_path, capsys, override, message
) -> None:
    config = write_config(tmp_path)
    extra = ["--set", "schedule.params.allow_padding=false"] if message is None else []
    code = main(["train", str(config), "--cache", str(cache), "--out", str(tmp_path / "run"),
                 "--set", override, *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    expected = (
        message
        or r"schedule.stages\[1\].sampler.params.sizes: patch size 64 exceeds every training case"
    )
    assert re.search(expected, err), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_compile_compiles_every_network_in_place_keeping_its_parameter_names(
    cache, tmp_path
) -> None:
    config = write_config(tmp_path, iterations="[1, 1, 1, 1]")
    plain = trainer(config, cache, tmp_path / "plain")
    compiled = trainer(config, cache, tmp_path / "compiled", ["train.compile=true"])
    for role, network in compiled.networks.items():
        assert network._compiled_call_impl is not None, role
        assert plain.networks[role]._compiled_call_impl is None
        assert list(network.state_dict()) == list(plain.networks[role].state_dict())


def test_step_2_on_whole_coarse_volumes_trains_net1_with_both_losses(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[1, 2, 1, 1]")
    run = tmp_path / "run"
    whole = trainer(config, cache, run, ['schedule.params.coarse_views="whole"'])
    step = whole.schedule.stages[1]
    assert (step.kind, step.sampler.component, step.batch_size) == (
        "net1_coarse",
        "whole_coarse",
        1,
    )
    whole.run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step2 = [r for r in rows if r["stage"] == "2_coarse" and "loss" in r]
    assert len(step2) == 2
    for row in step2:  # both terms on whole coarse volumes against their integer labels
        assert 0 <= row["net1.dice_foreground"] <= 1 and 0 <= row["net1.dice_weighted"] <= 1
    assert load_checkpoint(run / LAST, load_plugins()).state.stage == 4


def test_a_time_budget_ends_each_stage_at_its_share(cache, tmp_path) -> None:
    """train.seconds is shared by the stages in proportion to their iterations; a stage
    ends at its share, logged, whatever its iterations say."""
    config = write_config(tmp_path, iterations="[1000, 1000, 1000, 1000]")
    run = tmp_path / "run"
    trainer(config, cache, run, ["train.seconds=0.0001"]).run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stops = [r for r in rows if r.get("stopped") == "train.seconds"]
    assert [(r["stage"], r["step"]) for r in stops] == [
        (s, 1) for s in ("1_localise", "2_coarse", "3_end_to_end", "4_fine")
    ]
    assert all(r["budget"] == pytest.approx(0.0001 / 4, abs=1e-3) for r in stops)
    assert load_checkpoint(run / LAST, load_plugins()).state.stage == 4


def test_time_shares_split_the_budget_whatever_the_iterations(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[1000, 1000, 1000, 1000]")
    run = tmp_path / "run"
    settings = ["train.seconds=0.004", "schedule.params.time_shares=[1, 0, 0, 3]"]
    trainer(config, cache, run, settings).run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    budgets = [r["budget"] for r in rows if r.get("stopped") == "train.seconds"]
    assert budgets == pytest.approx([0.001, 0, 0, 0.003])


def test_a_negative_time_budget_is_refused(cache, tmp_path, capsys) -> None:
    code = main(["train", str(write_config(tmp_path)), "--cache", str(cache), "--out",
                 str(tmp_path / "run"), "--set", "train.seconds=-5"])  # fmt: skip
    assert code == 2
    assert "train.seconds must be >= 0 (0 = no time limit), got -5.0" in capsys.readouterr().err


def test_a_stage_that_trains_and_freezes_one_network_is_refused() -> None:
    from duoseg.core.interfaces.schedule import LossTerm, Schedule, Stage
    from duoseg.core.records.config import ComponentRef

    stage = Stage("s", "net1_coarse", ComponentRef("whole_coarse"), ("net1",),
                  (LossTerm("net1", "dice_foreground"),), 1, freeze=("net1",))  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"schedule.stages\[0\]: stage 's' both trains and freezes \['net1'\]"
    ):
        Schedule("bad", "two_stage", (stage,))


def test_an_empty_cache_is_refused(cache, tmp_path) -> None:
    import shutil

    empty = tmp_path / "empty.zarr"
    shutil.copytree(cache, empty)
    record = json.loads((empty / "duoseg-complete.json").read_text())
    (empty / "duoseg-complete.json").write_text(json.dumps({**record, "cases": []}))
    with pytest.raises(ConfigError, match=r"data.cache = .*empty.zarr' is empty"):
        trainer(write_config(tmp_path), empty, tmp_path / "run")


def test_a_checkpoint_from_a_missing_plugin_fails_naming_it(cache, tmp_path) -> None:
    config = write_config(tmp_path, iterations="[1, 0, 0, 0]")
    trainer(config, cache, tmp_path / "run").run()
    registry = load_plugins(blocked=["duoseg-example-plugin"])
    path = tmp_path / "run" / LAST
    from duoseg.core.training.weights import read_weights

    tensors, meta = read_weights(path)
    data = json.loads(meta["duoseg"])
    example = {"plugin": "example", "distribution": "duoseg-example-plugin", "version": "0.1.0"}
    data["provenance"]["loss:tversky"] = example
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"duoseg": json.dumps(data)})
    with pytest.raises(
        WeightsError,
        match=r"loss 'tversky' came from duoseg-example-plugin 0.1.0, which is not installed",
    ):
        load_checkpoint(path, registry)
    data["provenance"]["loss:tversky"] = {
        "plugin": "losses",
        "distribution": "duoseg",
        "version": "7.0",
    }
    data["provenance"]["loss:dice_weighted"] = data["provenance"].pop("loss:tversky")
    save_file(tensors, str(path), metadata={"duoseg": json.dumps(data)})
    with pytest.raises(WeightsError, match=r"another distribution or major version"):
        load_checkpoint(path, registry)
