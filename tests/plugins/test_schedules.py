"""The four-step schedule's options that change what a step trains on."""

from __future__ import annotations

import pytest
from duoseg.core.errors import ConfigError
from duoseg.plugins.schedules import wang2018


def test_step_2_on_whole_coarse_volumes_reads_the_coarse_level_one_case_at_a_time() -> None:
    schedule = wang2018(coarse_views="whole", subvolume_sizes=[64, 96], batch_size=2)
    step2 = schedule.stages[1]
    assert (step2.kind, step2.sampler.component, step2.batch_size) == (
        "net1_coarse",
        "whole_coarse",
        1,
    )
    assert [t.component for t in step2.losses] == ["dice_foreground", "dice_weighted"]
    assert schedule.stages[2].sampler.params["sizes"] == [64, 96]  # step 3 keeps its patches


def test_step_3_may_sample_smaller_subvolumes_than_step_2() -> None:
    stages = wang2018(subvolume_sizes=[128, 224], end_to_end_sizes=[64]).stages
    assert stages[1].sampler.params["sizes"] == [128, 224]
    assert stages[2].sampler.params["sizes"] == [64]
    assert wang2018(subvolume_sizes=[96]).stages[2].sampler.params["sizes"] == [96]


def test_time_shares_split_the_budget_apart_from_the_iterations() -> None:
    stages = wang2018(iterations=[100, 300, 10, 5000], time_shares=[1, 4, 0, 5]).stages
    assert [s.time_share for s in stages] == [1.0, 4.0, 0.0, 5.0]
    assert [s.iterations for s in stages] == [100, 300, 10, 5000]  # still upper bounds
    assert [s.time_share for s in wang2018().stages] == [None] * 4


def test_time_shares_need_one_number_a_step() -> None:
    with pytest.raises(ConfigError, match=r"schedule.params.time_shares = \[1, 2\]: expected four"):
        wang2018(time_shares=[1, 2])


def test_a_negative_time_share_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"schedule.stages\[1\].time_share = -1.0 must be >= 0"):
        wang2018(time_shares=[1, -1, 0, 1])
