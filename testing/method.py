"""The method contract: train a tiny recipe, predict, resume."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import ConfigError, PredictError
from duoseg.core.inference.model import load_model
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.interfaces.method import Method, Model
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.config import ComponentRef
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)
from numpy.typing import NDArray


@dataclass(frozen=True)
class MethodRecipe:
    """What a method trains in its conformance test: small networks for its roles, and a
    short schedule of its stage kinds (a registered schedule with tiny settings)."""

    networks: Mapping[str, ComponentRef]
    schedule: ComponentRef
    params: Mapping[str, Any] = field(default_factory=dict)  # the method's own


class _ResumedSink(MemorySink):
    """A sink that already holds slices ``0 .. done`` (a killed output being resumed)."""

    def __init__(self, done: int, earlier: NDArray[np.uint8]) -> None:
        self.done, self.earlier = done, earlier

    def begin(self, meta: CaseMeta, probabilities: bool) -> int:
        super().begin(meta, probabilities)
        self.labels[: self.done] = self.earlier[: self.done]
        return self.done


class MethodConformance(ComponentSuite):
    """The method trains every stage of its recipe's schedule through the engine and
    predicts through the streaming driver: labels of the volume's shape and classes,
    probabilities that sum to 1, the same labels whatever the slab depth, an output
    resumed part-way equal to an uninterrupted one; roles and options are checked.

    Set ``recipes`` (component name -> :class:`MethodRecipe`), or override
    :meth:`recipe`; a method without a recipe is skipped, saying so.
    """

    kind = "method"
    recipes: ClassVar[Mapping[str, MethodRecipe]] = {}

    def recipe(self, component_name: str) -> MethodRecipe:
        if component_name not in self.recipes:
            pytest.skip(f"method {component_name!r} has no recipe in {type(self).__name__}")
        return self.recipes[component_name]

    def test_declares_roles_and_stage_kinds(self, registry: Registry, component_name: str) -> None:
        method: Method = self.build(registry, component_name)
        assert method.roles and len(set(method.roles)) == len(method.roles), method.roles
        assert method.stage_kinds, f"method {component_name} declares no stage kinds"
        finals = method.stage_kinds if method.final_kinds is None else method.final_kinds
        assert finals, f"method {component_name}: no stage kind scores its final predictor"
        assert set(finals) <= set(method.stage_kinds), (finals, method.stage_kinds)

    def test_a_missing_role_is_refused_by_name(
        self, registry: Registry, component_name: str
    ) -> None:
        method: Method = self.build(registry, component_name)
        with pytest.raises(ConfigError, match=rf"networks\.{method.roles[0]} is missing"):
            method.check({}, None)

    def test_its_schedule_trains_only_its_stage_kinds(
        self, registry: Registry, component_name: str
    ) -> None:
        recipe = self.recipe(component_name)
        schedule = registry.build("schedule", recipe.schedule.component, **recipe.schedule.params)
        method: Method = self.build(registry, component_name)
        for stage in schedule.stages:
            assert stage.kind in method.stage_kinds, (stage.name, stage.kind)

    @pytest.mark.slow
    def test_trains_and_predicts_through_the_engine(
        self,
        registry: Registry,
        component_name: str,
        duoseg_phantom_cache: Path,
        tmp_path: Path,
    ) -> None:
        model = self._trained(registry, component_name, duoseg_phantom_cache, tmp_path)
        cache = open_cache(duoseg_phantom_cache, registry)
        case = cache.case(cache.cases()[-1])
        runs = []
        for budget in (1.0, 4096.0):
            sink = MemorySink()
            options = Options(memory_budget_mib=budget, probabilities=True)
            runs.append((sink, predict_case(model, case, sink, options).slab))
        (small, few), (full, _) = runs
        large = full.labels
        assert large.shape == case.meta.shape and int(large.max()) < case.meta.classes
        np.testing.assert_array_equal(small.labels, large, "labels depend on the slab depth")
        assert full.probabilities is not None
        total = full.probabilities.astype(np.float32).sum(0)
        np.testing.assert_allclose(total, 1, atol=5e-3, err_msg="probabilities do not sum to 1")
        done = max(1, case.meta.shape[0] // 2)
        resumed = _ResumedSink(done, large)
        predict_case(model, case, resumed, Options(memory_budget_mib=1.0))
        np.testing.assert_array_equal(resumed.labels, large, "a resumed output differs")
        assert few < case.meta.shape[0], "a 1 MiB budget should need several slabs"

    def test_an_unknown_prediction_option_is_refused_with_the_known_ones(
        self, registry: Registry, component_name: str, duoseg_phantom_cache: Path
    ) -> None:
        method: Method = self.build(registry, component_name)
        with pytest.raises(PredictError, match=r"method option nonsense=1 is not an option"):
            method.parse_options({"nonsense": 1}, "case")

    def _trained(self, registry: Registry, component_name: str, cache: Path, run: Path) -> Model:
        from duoseg.core.records.config import DataConfig, ExperimentConfig, TrainConfig
        from duoseg.core.training.trainer import Trainer, config_as_dict

        recipe = self.recipe(component_name)
        cases = open_cache(cache, registry).cases()
        config = ExperimentConfig(
            seed=0,
            data=DataConfig(cache=str(cache), validation_cases=[cases[-1]]),
            train=TrainConfig(checkpoint_every=0),
            networks=dict(recipe.networks),
            schedule=recipe.schedule,
            method=ComponentRef(component_name, {**self.params, **recipe.params}),
        )
        source = f"{type(self).__name__}[{component_name}]"
        Trainer(config, registry, run, source=source, raw_config=config_as_dict(config)).run()
        return load_model(run, registry)
