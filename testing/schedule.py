"""The schedule contract."""

from __future__ import annotations

import math

import pytest
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)


class ScheduleConformance(ComponentSuite):
    """A :class:`Schedule` of valid stages whose method, samplers and losses are
    registered and accept the parameters the stages give them."""

    kind = "schedule"

    @pytest.fixture
    def schedule(self, registry: Registry, component_name: str) -> Schedule:
        schedule: Schedule = self.build(registry, component_name)
        return schedule

    def test_is_a_schedule_of_valid_stages(self, schedule: Schedule) -> None:
        assert isinstance(schedule, Schedule)
        assert schedule.stages, f"schedule {schedule.name!r} has no stages"
        for index, stage in enumerate(schedule.stages):
            stage.validate(f"schedule.stages[{index}]")
        assert schedule.networks, f"schedule {schedule.name!r} names no network"

    def test_the_same_params_give_the_same_schedule(
        self, schedule: Schedule, registry: Registry, component_name: str
    ) -> None:
        assert self.build(registry, component_name) == schedule

    def test_its_method_is_registered(self, schedule: Schedule, registry: Registry) -> None:
        assert schedule.method in registry.names("method"), (
            f"schedule {schedule.name!r} trains method {schedule.method!r}, which is not "
            f"registered: {registry.names('method')}"
        )

    def test_every_sampler_is_registered_and_takes_its_params(
        self, schedule: Schedule, registry: Registry
    ) -> None:
        for stage in schedule.stages:
            ref = stage.sampler
            assert ref.component in registry.names("sampler"), (
                f"stage {stage.name!r}: sampler {ref.component!r} is not registered"
            )
            assert isinstance(registry.build("sampler", ref.component, **ref.params), Sampler)

    def test_every_loss_is_registered_and_takes_its_params(
        self, schedule: Schedule, registry: Registry
    ) -> None:
        for stage in schedule.stages:
            for term in stage.losses:
                assert term.component in registry.names("loss"), (
                    f"stage {stage.name!r}: loss {term.component!r} is not registered"
                )
                loss = registry.build("loss", term.component, **term.params)
                assert isinstance(loss, SegmentationLoss)
                assert math.isfinite(term.weight) and term.weight >= 0, (stage.name, term)
