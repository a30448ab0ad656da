"""What a training run is built from: the config's components, built through the
registry and checked together before the first step.

The cache (and its validation split), the method and schedule, the networks (one per
role, with the cache's class count), the augmentations, each stage's sampler, and the
preprocessing record the checkpoints carry. Every refusal names the config file and key.
"""

from __future__ import annotations

from typing import Any

import torch
from duoseg.core.config import build_ref, resolve_method
from duoseg.core.data.cache import open_cache
from duoseg.core.distributed import Ranks
from duoseg.core.errors import ConfigError, DataError
from duoseg.core.interfaces.method import Method
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.schedule import Schedule, Stage
from duoseg.core.interfaces.store import CacheReader
from duoseg.core.records.config import ComponentRef, ExperimentConfig
from duoseg.core.records.preprocessing import Preprocessing, require_levels
from duoseg.core.registry import Registry


class TrainingSetup:
    """The components of ``config``, built and checked; ``source`` names the config."""

    def __init__(
        self, config: ExperimentConfig, registry: Registry, *, source: str, ranks: Ranks
    ) -> None:
        self.config, self.registry, self.source = config, registry, source
        self.world, self.rank = ranks.world, ranks.rank
        self.device = torch.device(ranks.device(config.train.device))  # one GPU per rank
        self.cache = self._open_cache()
        self.method, self.schedule = self._build_method()
        self.preprocessing = self._preprocessing()
        self.networks = self._build_networks()
        self.augmentations = [
            self.build("augmentation", r, f"augmentations[{i}]")
            for i, r in enumerate(config.augmentations)
        ]
        self.validation = list(config.data.validation_cases)
        self.training_cases = [c for c in self.cache.cases() if c not in self.validation]
        if not self.training_cases:
            raise ConfigError(f"{source}: data.validation_cases leaves no case to train on")
        self.metas = {c: self.cache.case(c).meta for c in self.cache.cases()}
        self._check_patch_sizes()
        self._check_batch_shapes()

    def _open_cache(self) -> CacheReader:
        if not self.config.data.cache:
            raise ConfigError(f"{self.source}: data.cache is not set (give --cache CACHE)")
        cache = open_cache(self.config.data.cache, self.registry)
        if not cache.cases():
            raise ConfigError(f"{self.source}: data.cache = {self.config.data.cache!r} is empty")
        unknown = sorted(set(self.config.data.validation_cases) - set(cache.cases()))
        if unknown:
            raise ConfigError(
                f"{self.source}: data.validation_cases {unknown} are not in the cache"
            )
        return cache

    def _preprocessing(self) -> Preprocessing:
        """The cache's record with the levels the method reads, refused naming the
        ``cache build`` option when one is missing; what the checkpoints record."""
        needed = self.method.levels(self.config.train)
        cache = self.cache.path
        try:
            require_levels(self.cache.preprocessing, needed, owner=f"cache {cache}",
                           needs=f"method {self.method}", cache=str(cache))  # fmt: skip
        except DataError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return self.cache.preprocessing.keeping(needed)

    def build(self, kind: str, ref: ComponentRef, key: str) -> Any:
        """The component ``ref`` names; ``key`` is its place in the config, for errors."""
        return build_ref(self.registry, kind, ref, where=f"{self.source}: {key}")

    def _build_method(self) -> tuple[Method, Schedule]:
        method, schedule = resolve_method(self.config, self.registry, source=self.source)
        if schedule is None:
            raise ConfigError(f"{self.source}: no [schedule] section")
        for stage in schedule.stages:
            for term in stage.losses:
                ref = ComponentRef(term.component, term.params)
                self.build("loss", ref, f"schedule stage {stage.name!r}: loss of {term.network}")
        return method, schedule

    def _build_networks(self) -> dict[str, SegmentationNetwork]:
        classes = self.cache.case(self.cache.cases()[0]).meta.classes
        networks: dict[str, SegmentationNetwork] = {}
        for role in self.method.roles:
            ref = self.config.networks.get(role)
            if ref is None:
                raise ConfigError(
                    f"{self.source}: networks.{role} is missing; the method "
                    f"{self.method.name!r} uses it"
                )
            torch.manual_seed(self.config.seed + len(networks))
            network = self.build("network", ref, f"networks.{role}.component").to(self.device)
            if network.out_channels != classes:
                raise ConfigError(
                    f"{self.source}: networks.{role}.params.classes = {network.out_channels} but "
                    f"the cache's cases have {classes} classes (background included)"
                )
            if self.config.train.compile:
                network.compile()
            networks[role] = network
        extra = sorted(set(self.config.networks) - set(networks))
        if extra:
            raise ConfigError(
                f"{self.source}: networks.{extra[0]}: the method {self.method.name!r} has "
                f"roles {list(self.method.roles)}"
            )
        try:
            self.method.check(networks, self.schedule)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return networks

    def _check_batch_shapes(self) -> None:
        """Samples of one batch must share a shape: refuse a sampler whose shape follows
        the case (whole slices, whole volumes) in a batch over cases of several shapes."""
        for index, stage in enumerate(self.schedule.stages):
            if stage.batch_size == 1:
                continue
            sampler = self.sampler(stage)
            shapes = {c: sampler.sample_shape(self.metas[c]) for c in self.training_cases}
            found = {shape: case for case, shape in shapes.items() if shape is not None}
            if len(found) > 1:
                (a, case_a), (b, case_b) = sorted(found.items())[:2]
                name = stage.sampler.component
                accepted = ", ".join(self.registry.parameters("sampler", name))
                raise ConfigError(
                    f"{self.source}: schedule.stages[{index}] ({stage.name!r}) batches "
                    f"batch_size = {stage.batch_size} samples of sampler {name!r}, whose "
                    f"shape follows the case: {a} from {case_a} but {b} from {case_b} cannot "
                    f"share a batch; give the sampler a fixed size through the schedule (its "
                    f"parameters: {accepted}) or batch_size = 1"
                )

    def _check_patch_sizes(self) -> None:
        shapes = [self.metas[c].shape for c in self.training_cases]
        for index, stage in enumerate(self.schedule.stages):
            params = stage.sampler.params
            if params.get("allow_padding", True):
                continue
            for size in params.get("sizes", ()):
                if not any(all(size <= n for n in shape) for shape in shapes):
                    raise ConfigError(
                        f"{self.source}: schedule.stages[{index}].sampler.params.sizes: patch "
                        f"size {size} exceeds every training case (largest {max(shapes)}) and "
                        "allow_padding is false"
                    )

    def provenance(self) -> dict[str, dict[str, str]]:
        used: list[tuple[str, str]] = [("schedule", self.config.schedule.component)]  # type: ignore[union-attr]
        used.append(("method", self.method.name))
        used += [("network", r.component) for r in self.config.networks.values()]
        used += [("augmentation", r.component) for r in self.config.augmentations]
        for stage in self.schedule.stages:
            used.append(("sampler", stage.sampler.component))
            used += [("loss", t.component) for t in stage.losses]
        out = {}
        for kind, name in used:
            info = self.registry.describe(kind, name)
            out[f"{kind}:{name}"] = {
                "plugin": info.plugin,
                "distribution": info.distribution,
                "version": info.version,
            }
        return out

    def sampler(self, stage: Stage) -> Sampler:
        sampler: Sampler = self.build("sampler", stage.sampler, f"stage {stage.name} sampler")
        sampler.seed = self.config.seed
        # Samples of one global batch (all ranks) share the batch-level draws (patch size).
        sampler.batch_size = stage.batch_size * self.world
        self.method.adapt_sampler(stage.kind, sampler, self.preprocessing)
        return sampler
