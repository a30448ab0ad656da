"""Conformance suites: the contract every component of a kind keeps.

A plugin's tests subclass one suite per component and set ``name`` (and ``params``,
the factory's keyword arguments, where the defaults are too big for a quick test)::

    from duoseg.core.testing import LossConformance, NetworkConformance

    class TestTinyUNet(NetworkConformance):
        name = "tiny_unet"
        params = {"width": 4}

    class TestTversky(LossConformance):
        name = "tversky"

One suite per kind, each holding that kind's whole contract: :class:`NetworkConformance`,
:class:`LossConformance`, :class:`SamplerConformance`, :class:`ScheduleConformance`,
:class:`StoreConformance`, :class:`ImporterConformance`,
:class:`AugmentationConformance`, :class:`MetricConformance` and
:class:`MethodConformance`. A few take a hook where the contract needs something only
the component's author knows: an importer's source files
(:meth:`ImporterConformance.write_source`), how to lose one chunk of a store's format
(:meth:`StoreConformance.remove_chunk`), the small networks and schedule a method
trains with (:attr:`MethodConformance.recipes`).

Every registered component
--------------------------
:func:`every_registered` in place of a name runs a suite once for each component of
that kind registered in the current environment - duoseg's built-ins and every
installed plugin (``DUOSEG_DISABLE_PLUGIN_AUTOLOAD`` and ``DUOSEG_BLOCKED_PLUGINS``
apply). Each test is parametrised by ``component_name``, so its id names the
component (``TestEveryStore::test_...[zarr]``)::

    from duoseg.core.testing import NetworkConformance, StoreConformance, every_registered

    class TestEveryStore(StoreConformance):
        name = every_registered("store")

    class TestEveryNetwork(NetworkConformance):
        # per-component factory arguments; exclude=(...) leaves components out
        name = every_registered("network", params={"tiny_unet": {"base_width": 4}})

The suites parametrise themselves (a ``pytest_generate_tests`` of their own), so this
needs no conftest. The registry is built once per test session, when the first suite
asks for it at collection, never at import.

The pytest plugin
-----------------
Installing duoseg registers this module as the pytest plugin ``duoseg`` (entry-point
group ``pytest11``), so any project's tests get, without a conftest:

* fixture ``duoseg_registry``: the session's registry, the one the suites use (build
  components with it; to register plugins in-process, make your own with
  :func:`~duoseg.core.registry.load_plugins`);
* fixture ``duoseg_phantom_cache``: the path of a small Zarr cache of two phantom
  cases (48x40x32, chunks 8x16x16), built once per session;
* marker ``duoseg_conformance(kind=...)`` on every suite test: ``-m "not
  duoseg_conformance"`` leaves them out, ``-m "duoseg_conformance(kind='store')"``
  keeps one kind.

``-p no:duoseg`` disables the plugin; the suites still run when imported, as they build
what they need themselves. Do not also name this module in ``pytest_plugins``: pytest
has registered it already, as ``duoseg``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from duoseg.core.config import ComponentRef
from duoseg.core.data.cache import open_cache
from duoseg.core.data.orientation import canonical_affine, to_source
from duoseg.core.data.preprocessing import Preprocessing, class_counts
from duoseg.core.errors import ConfigError, DataError, InputShapeError, PredictError
from duoseg.core.inference.outputs import MemorySink
from duoseg.core.inference.streaming import Model, Options, load_model, predict_case
from duoseg.core.interfaces.augmentation import Augmentation
from duoseg.core.interfaces.importer import Importer, SourcePair
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.method import Method
from duoseg.core.interfaces.metric import Metric
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import IMAGE_PAD, LABEL_PAD, Sampler
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.interfaces.store import (
    CacheReader,
    CaseArrays,
    CaseMeta,
    LevelArrays,
    LevelMeta,
    VolumeStore,
    array_digest,
    completion_record,
)
from duoseg.core.registry import Registry, load_plugins
from duoseg.core.training.weights import load_weights, save_weights
from numpy.typing import NDArray

__all__ = [
    "AugmentationConformance",
    "EveryRegistered",
    "ExpectedCase",
    "ImporterConformance",
    "LossConformance",
    "MethodConformance",
    "MethodRecipe",
    "MetricConformance",
    "NetworkConformance",
    "SamplerConformance",
    "ScheduleConformance",
    "StoreConformance",
    "every_registered",
    "phantom_cache_path",
    "session_registry",
]

MARKER: Final = "duoseg_conformance"
_REGISTRY = pytest.StashKey[Registry]()
_PHANTOM_CACHE = pytest.StashKey[Path]()


def session_registry(config: pytest.Config) -> Registry:
    """The test session's registry, built by :func:`load_plugins` on first use."""
    if _REGISTRY not in config.stash:
        config.stash[_REGISTRY] = load_plugins()
    return config.stash[_REGISTRY]


def phantom_cache_path(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """A Zarr cache of two small phantom cases, built once per test session, with the
    levels the built-in methods read (the coarse 3 mm one and the baseline's 2 mm one)."""
    if _PHANTOM_CACHE not in config.stash:
        from duoseg.apps.phantom import phantom_cache

        root = factory.mktemp("duoseg-phantom")
        config.stash[_PHANTOM_CACHE] = phantom_cache(
            root,
            cases=2,
            size=(48, 40, 32),
            seed=5,
            chunks=(8, 16, 16),
            levels={"coarse": 3.0, "baseline": 2.0},
        )
    return config.stash[_PHANTOM_CACHE]


@dataclass(frozen=True)
class EveryRegistered:
    """A suite's ``name`` standing for every registered component of ``kind``."""

    kind: str
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()

    def names(self, registry: Registry) -> list[str]:
        return [name for name in registry.names(self.kind) if name not in self.exclude]


def every_registered(
    kind: str,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    exclude: Sequence[str] = (),
) -> EveryRegistered:
    """Run a suite once per registered component of ``kind``; set it as the suite's
    ``name``. ``params`` maps component names to their factory arguments (on top of the
    suite's ``params``); components named in ``exclude`` are left out."""
    return EveryRegistered(
        kind, {name: dict(p) for name, p in (params or {}).items()}, frozenset(exclude)
    )


class _ComponentSuite:
    kind: ClassVar[str]
    name: ClassVar[str | EveryRegistered]
    params: ClassVar[dict[str, Any]] = {}

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``component_name`` when ``name`` is :func:`every_registered`."""
        every = getattr(self, "name", None)
        if not isinstance(every, EveryRegistered):
            return
        if every.kind != self.kind:
            raise TypeError(
                f"{type(self).__name__}: a {self.kind} suite cannot run "
                f"every_registered({every.kind!r})"
            )
        if "component_name" in metafunc.fixturenames:
            metafunc.parametrize("component_name", every.names(session_registry(metafunc.config)))

    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls, request: pytest.FixtureRequest) -> Registry:
        return session_registry(request.config)

    @pytest.fixture
    def component_name(self) -> str:
        name = getattr(self, "name", None)
        if not isinstance(name, str):  # unset, or pytest_generate_tests did not run
            raise TypeError(
                f"{type(self).__name__}.name = {name!r}: set a component's name, or "
                f"every_registered({self.kind!r})"
            )
        return name

    def component_params(self, component_name: str) -> dict[str, Any]:
        """The factory arguments: the suite's ``params``, then the component's own."""
        own = (
            self.name.params.get(component_name, {})
            if isinstance(self.name, EveryRegistered)
            else {}
        )
        return {**self.params, **own}

    def build(self, registry: Registry, component_name: str, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return registry.build(self.kind, component_name, **self.component_params(component_name))


class NetworkConformance(_ComponentSuite):
    """Forward/backward on tiny inputs, the shape contract, safetensors round trip."""

    kind = "network"

    @pytest.fixture
    def network(self, registry: Registry, component_name: str) -> SegmentationNetwork:
        network: SegmentationNetwork = self.build(registry, component_name)
        return network

    @staticmethod
    def example(network: SegmentationNetwork, batch: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return torch.randn(network.example_input_shape(batch), generator=generator)

    def test_is_a_segmentation_network(self, network: SegmentationNetwork) -> None:
        assert isinstance(network, SegmentationNetwork)

    def test_output_shape_contract(self, network: SegmentationNetwork) -> None:
        x = self.example(network)
        with torch.no_grad():
            out = network.eval()(x)
        assert tuple(out.shape) == network.output_shape(tuple(x.shape))
        assert out.shape[1] == network.out_channels
        assert torch.isfinite(out).all()

    def test_backward_gives_finite_gradients(self, network: SegmentationNetwork) -> None:
        out = network.train()(self.example(network))
        target = torch.zeros(out.shape[:1] + out.shape[2:], dtype=torch.long)
        F.cross_entropy(out, target).backward()  # type: ignore[no-untyped-call]
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(bool(g.abs().sum() > 0) for g in grads if g is not None)

    def test_safetensors_round_trip(
        self, network: SegmentationNetwork, registry: Registry, component_name: str, tmp_path: Any
    ) -> None:
        path = tmp_path / "weights.safetensors"
        save_weights(network, path, {"component": component_name})
        other = self.build(registry, component_name, seed=123)
        assert load_weights(other, path)["component"] == component_name
        x = self.example(network, batch=1)
        with torch.no_grad():
            torch.testing.assert_close(other.eval()(x), network.eval()(x))

    def test_channels_last_gives_the_same_scores(self, network: SegmentationNetwork) -> None:
        x = self.example(network, batch=1)
        fast = copy.deepcopy(network).use_channels_last(True).eval()
        plain = copy.deepcopy(network).use_channels_last(False).eval()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)

    def test_rejects_a_wrong_channel_count(self, network: SegmentationNetwork) -> None:
        batch, channels, *spatial = network.example_input_shape(1)
        with pytest.raises(InputShapeError, match=f"expects {channels} input channel"):
            network(torch.zeros(batch, channels + 1, *spatial))

    def test_rejects_a_non_volume(self, network: SegmentationNetwork) -> None:
        with pytest.raises(InputShapeError, match="5-D tensor"):
            network(torch.zeros(1, network.in_channels, 16, 16))


class LossConformance(_ComponentSuite):
    """Bounded values, zero for a perfect prediction, finite gradients, clear errors."""

    kind = "loss"
    classes: ClassVar[int] = 4

    @pytest.fixture
    def loss(self, registry: Registry, component_name: str) -> SegmentationLoss:
        loss: SegmentationLoss = self.build(registry, component_name)
        return loss

    def scores(self, loss: SegmentationLoss, shape: tuple[int, ...]) -> torch.Tensor:
        logits = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        return logits if loss.inputs == "logits" else logits.softmax(1)

    def labels(self, shape: tuple[int, ...], absent: int | None = None) -> torch.Tensor:
        high = self.classes - (absent is not None)
        target = torch.randint(0, high, shape, generator=torch.Generator().manual_seed(3))
        if absent is not None:
            target[target >= absent] += 1
        return target

    def perfect(self, loss: SegmentationLoss, target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        return onehot * 40 if loss.inputs == "logits" else onehot

    def test_is_a_segmentation_loss(self, loss: SegmentationLoss) -> None:
        assert isinstance(loss, SegmentationLoss)

    @pytest.mark.parametrize("spatial", [(6, 8, 8), (8, 8)], ids=["3d", "2d"])
    def test_value_lies_in_the_documented_range(
        self, loss: SegmentationLoss, spatial: tuple[int, ...]
    ) -> None:
        value = loss(self.scores(loss, (2, self.classes, *spatial)), self.labels((2, *spatial)))
        low, high = loss.value_range
        assert value.dim() == 0 and low <= float(value) <= high

    def test_perfect_prediction_gives_zero(self, loss: SegmentationLoss) -> None:
        target = self.labels((2, 6, 8, 8))
        assert float(loss(self.perfect(loss, target), target)) == pytest.approx(0.0, abs=1e-4)

    def test_gradients_are_finite_when_a_class_is_absent(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8)).requires_grad_()
        loss(scores, self.labels((2, 6, 8, 8), absent=self.classes - 1)).backward()
        assert scores.grad is not None and torch.isfinite(scores.grad).all()

    def test_one_hot_and_integer_targets_agree(self, loss: SegmentationLoss) -> None:
        scores = self.scores(loss, (2, self.classes, 6, 8, 8))
        target = self.labels((2, 6, 8, 8))
        onehot = F.one_hot(target, self.classes).movedim(-1, 1).float()
        torch.testing.assert_close(loss(scores, onehot), loss(scores, target))

    def test_rejects_a_label_out_of_range(self, loss: SegmentationLoss) -> None:
        target = self.labels((1, 4, 4, 4))
        target[0, 0, 0, 0] = self.classes
        limit = f"0..{self.classes - 1}"
        with pytest.raises(InputShapeError, match=f"label value {self.classes} outside {limit}"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), target)

    def test_rejects_a_mismatched_target(self, loss: SegmentationLoss) -> None:
        with pytest.raises(InputShapeError, match="does not match scores"):
            loss(self.scores(loss, (1, self.classes, 4, 4, 4)), self.labels((1, 4, 4, 5)))


class SamplerConformance(_ComponentSuite):
    """Reproducible draws, samples that match the cache (padded as documented)."""

    kind = "sampler"
    draws: ClassVar[int] = 12

    @pytest.fixture(scope="class")
    @classmethod
    def phantom_cache(
        cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> CacheReader:
        """A Zarr cache of two small phantom cases, built once per session."""
        from duoseg.core.data.cache import open_cache

        path = phantom_cache_path(request.config, tmp_path_factory)
        return open_cache(path, session_registry(request.config))

    @pytest.fixture
    def sampler(self, registry: Registry, component_name: str) -> Sampler:
        small = "sizes" in registry.parameters("sampler", component_name)
        params: dict[str, Any] = {"sizes": (16, 24)} if small else {}
        params.update(self.component_params(component_name))
        sampler: Sampler = registry.build("sampler", component_name, **params)
        return sampler

    def test_is_a_sampler(self, sampler: Sampler) -> None:
        assert isinstance(sampler, Sampler)

    def test_the_same_seed_epoch_and_index_give_the_same_sample(
        self, sampler: Sampler, phantom_cache: CacheReader
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[0])
        for index in range(self.draws):
            a = sampler.sample(case, epoch=1, index=index)
            b = sampler.sample(case, epoch=1, index=index)
            assert a.origin == b.origin
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.label, b.label)

    def test_samples_equal_the_cache_padded_as_documented(
        self, sampler: Sampler, phantom_cache: CacheReader
    ) -> None:
        case = phantom_cache.case(phantom_cache.cases()[1])
        for index in range(self.draws):
            sample = sampler.sample(case, epoch=0, index=index)
            full = sample.level == "full"
            grid = None if full else case.level(sample.level)
            image = (case.image if grid is None else grid.image)[...].astype(np.float32)
            labels = case.label if grid is None else grid.label
            assert labels is not None
            label = labels[...]
            assert sample.image.dtype == np.float32 and sample.image.ndim == 4
            expected = _crop(image, sample.origin, sample.image.shape[1:], IMAGE_PAD)
            np.testing.assert_array_equal(sample.image[0], expected)
            depth = sample.label.shape[0]
            offset = (sample.image.shape[1] - depth) // 2
            origin = (sample.origin[0] + offset, *sample.origin[1:])
            np.testing.assert_array_equal(
                sample.label, _crop(label, origin, sample.label.shape, LABEL_PAD)
            )


class ScheduleConformance(_ComponentSuite):
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


class StoreConformance(_ComponentSuite):
    """Cases written through the store read back equal, chunk borders included; a cache
    opens only once its completion record is written; rewrites replace and drop cases;
    a missing chunk is an error naming the case, the array and the chunk."""

    kind = "store"
    chunks: ClassVar[tuple[int, int, int]] = (4, 8, 8)
    shape: ClassVar[tuple[int, int, int]] = (10, 12, 9)  # edge chunks on every axis
    class_names: ClassVar[tuple[str, ...]] = ("background", "a", "b", "c")

    @pytest.fixture
    def store(self, registry: Registry, component_name: str) -> VolumeStore:
        small = "chunks" in registry.parameters("store", component_name)
        params: dict[str, Any] = {"chunks": self.chunks} if small else {}
        params.update(self.component_params(component_name))
        store: VolumeStore = registry.build("store", component_name, **params)
        return store

    def target(self, tmp_path: Path) -> Path:
        """Where a test's cache goes; it does not exist yet."""
        return tmp_path / "cache"

    def remove_chunk(
        self, component_name: str, path: Path, case_id: str, array: str, index: tuple[int, ...]
    ) -> None:
        """Lose chunk ``index`` of ``array`` of a case in the complete cache at ``path``,
        as a disk fault would. Override it for your store's format; without it the
        missing-chunk test is skipped."""
        pytest.skip(f"{type(self).__name__} cannot remove a chunk of a {component_name} cache")

    def case_arrays(self, store: VolumeStore, case_id: str, seed: int = 0) -> CaseArrays:
        """A small labelled case, as :func:`~duoseg.core.data.preprocessing.prepare_case` makes."""
        rng = np.random.default_rng(seed)
        image = rng.uniform(-1, 1, self.shape).astype(np.float16)
        label = rng.integers(0, len(self.class_names), self.shape, dtype=np.uint8)
        spacing = (2.0, 0.75, 0.8)
        # Two levels, every step 2 and 3 along each axis: a store writes whatever it gets.
        levels = {name: LevelArrays(
            LevelMeta(float(step), _shape3(image[::step, ::step, ::step].shape),
                      (spacing[0] * step, spacing[1] * step, spacing[2] * step)),
            image[::step, ::step, ::step].copy(), label[::step, ::step, ::step].copy(),
        ) for name, step in (("coarse", 2), ("baseline", 3))}  # fmt: skip
        affine = np.diag([*spacing[::-1], 1.0]).tolist()
        meta = CaseMeta(
            case_id=case_id,
            shape=self.shape,
            spacing=spacing,
            levels={name: level.meta for name, level in levels.items()},
            canonical_affine=affine,
            source_affine=affine,
            source_shape=(self.shape[2], self.shape[1], self.shape[0]),
            class_names=self.class_names,
            label_values=tuple(range(len(self.class_names))),
            normalisation={"low": -100.0, "high": 300.0},
            checksums={"image": f"{seed:064x}", "label": f"{seed + 1:064x}"},
            has_label=True,
        )
        counts = class_counts(label, store.chunks, len(self.class_names))
        arrays = CaseArrays(meta, image, label, levels, counts)
        digests = {k: array_digest(v, store.chunks) for k, v in arrays.volumes().items()}
        return dataclasses.replace(arrays, meta=dataclasses.replace(meta, digests=digests))

    def write(
        self, store: VolumeStore, path: Path, cases: Sequence[CaseArrays], drop: Sequence[str] = ()
    ) -> None:
        """Write ``cases``, drop ``drop``, commit a record listing what remains."""
        writer = store.writer(path)
        try:
            kept = set(writer.case_metas()) - set(drop)
            for case in cases:
                writer.write_case(case)
                kept.add(case.meta.case_id)
            for case_id in drop:
                writer.drop_case(case_id)
            preprocessing = Preprocessing.with_targets(
                {"coarse": 2.0, "baseline": 3.0},
                class_names=self.class_names,
                label_values=tuple(range(len(self.class_names))),
            )
            writer.commit(completion_record(sorted(kept), store.name, preprocessing.as_dict()))
        except BaseException:
            writer.abort()
            raise

    def test_is_a_volume_store(self, store: VolumeStore) -> None:
        assert isinstance(store, VolumeStore)

    def test_written_cases_read_back_equal(self, store: VolumeStore, tmp_path: Path) -> None:
        path = self.target(tmp_path)
        cases = [self.case_arrays(store, "case_b", seed=1), self.case_arrays(store, "case_a", 2)]
        self.write(store, path, cases)
        assert store.recognises(path), f"the store does not recognise the cache it wrote: {path}"
        with store.open(path) as cache:
            assert cache.cases() == ["case_a", "case_b"]
            assert cache.preprocessing.class_names == self.class_names
            for written in cases:
                case = cache.case(written.meta.case_id)
                assert case.meta == written.meta, f"read {case.meta}, wrote {written.meta}"
                for name, expected in written.volumes().items():
                    array = case.volumes()[name]
                    assert (array.shape, array.dtype) == (expected.shape, expected.dtype), name
                    np.testing.assert_array_equal(array[...], expected, err_msg=name)
                box = (slice(3, 9), slice(5, 12), slice(2, 7))  # across chunk borders
                np.testing.assert_array_equal(case.image[box], written.image[box])
                np.testing.assert_array_equal(case.class_counts, written.class_counts)
                # The class index has one block per chunk of the stored label.
                blocks = [-(-n // c) for n, c in zip(self.shape, case.label_block, strict=True)]
                assert list(case.class_counts.shape[:3]) == blocks, (
                    case.class_counts.shape,
                    blocks,
                )
            problems = cache.verify()
            assert problems == [], problems

    def test_recognises_only_its_own_caches(self, store: VolumeStore, tmp_path: Path) -> None:
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "notes.txt").write_text("not a cache")
        (tmp_path / "file.txt").write_text("not a cache")
        for path in (tmp_path / "absent", tmp_path / "folder", tmp_path / "file.txt"):
            assert not store.recognises(path), path

    def test_a_cache_opens_only_after_its_completion_record(
        self, store: VolumeStore, tmp_path: Path
    ) -> None:
        path = self.target(tmp_path)
        writer = store.writer(path)
        writer.write_case(self.case_arrays(store, "case_a"))
        with pytest.raises(DataError, match=re.escape(str(path))):
            store.open(path)
        writer.abort()
        with pytest.raises(DataError, match=re.escape(str(path))):
            store.open(path)
        self.write(store, path, [self.case_arrays(store, "case_a")])
        with store.open(path) as cache:
            assert cache.cases() == ["case_a"]

    def test_a_rewrite_replaces_and_drops_cases(self, store: VolumeStore, tmp_path: Path) -> None:
        path = self.target(tmp_path)
        first = [self.case_arrays(store, "case_a", 1), self.case_arrays(store, "case_b", 2)]
        self.write(store, path, first)
        writer = store.writer(path)
        metas = {case.meta.case_id: case.meta for case in first}
        assert writer.case_metas() == metas, writer.case_metas()
        writer.abort()
        changed = self.case_arrays(store, "case_a", seed=3)
        self.write(store, path, [changed], drop=["case_b"])
        with store.open(path) as cache:
            assert cache.cases() == ["case_a"]
            np.testing.assert_array_equal(cache.case("case_a").image[...], changed.image)
            problems = cache.verify()
            assert problems == [], problems

    def test_a_missing_chunk_is_an_error_naming_case_array_and_chunk(
        self, store: VolumeStore, component_name: str, tmp_path: Path
    ) -> None:
        path = self.target(tmp_path)
        written = self.case_arrays(store, "case_a")
        self.write(store, path, [written])
        self.remove_chunk(component_name, path, "case_a", "image", (1, 0, 0))
        with store.open(path) as cache:
            image = cache.case("case_a").image
            depth = image.chunks[0]
            np.testing.assert_array_equal(image[:depth], written.image[:depth])  # other chunks
            with pytest.raises(DataError, match=r"case_a\b.*\bimage\b.*\(1, 0, 0\)"):
                image[...]
            (problem,) = cache.verify()
            assert "case_a" in problem and "(1, 0, 0)" in problem


class ExpectedCase(NamedTuple):
    """What an importer must make of one source case, in canonical (z, y, x) RAS+."""

    image: NDArray[Any]
    label: NDArray[Any]  # the source's label values, not class indices
    spacing: tuple[float, float, float]  # z, y, x mm


class ImporterConformance(_ComponentSuite):
    """Discovery sorted by case id; canonical RAS+ (z, y, x) float32 images and uint8
    labels of one shape, the canonical affine agreeing with the source's; refusals that
    name the file or folder at fault.

    The source data come from :meth:`write_source`: by default MM-WHS-named NIfTI pairs
    of two small phantoms, stored LPS as DICOM-derived files are. An importer of another
    format overrides it, and :meth:`corrupt` if damaging the image file is not how to
    make a case unreadable."""

    kind = "importer"
    size: ClassVar[tuple[int, int, int]] = (20, 18, 16)  # phantom x, y, z voxels

    @pytest.fixture
    def importer(self, registry: Registry, component_name: str) -> Importer:
        importer: Importer = self.build(registry, component_name)
        return importer

    @pytest.fixture
    def source(self, tmp_path: Path) -> Path:
        folder = tmp_path / "source"
        folder.mkdir()
        return folder

    @pytest.fixture
    def expected(self, source: Path) -> dict[str, ExpectedCase]:
        return self.write_source(source)

    def write_source(self, folder: Path) -> dict[str, ExpectedCase]:
        """Write a tiny labelled data set into ``folder``; return, per case id, what it
        must import as."""
        from duoseg.apps.phantom import make_case, write_case

        expected = {}
        for number in (1, 0):  # written out of order: discovery sorts
            case = make_case(0, number, "ct", self.size)
            write_case(case, folder)
            expected[case.name] = ExpectedCase(case.image, case.label, case.spacing)
        return expected

    def corrupt(self, pair: SourcePair) -> Path:
        """Damage one file of ``pair`` so that it cannot be imported; return that file."""
        pair.image.write_bytes(b"this is not a medical image")
        return pair.image

    def test_is_an_importer(self, importer: Importer) -> None:
        assert isinstance(importer, Importer)

    def test_discovers_every_case_sorted_by_id(
        self, importer: Importer, source: Path, expected: dict[str, ExpectedCase]
    ) -> None:
        pairs = importer.discover(source)
        assert [pair.case_id for pair in pairs] == sorted(expected), pairs
        for pair in pairs:
            assert pair.image.exists() and pair.label is not None and pair.label.exists(), pair

    def test_cases_import_as_canonical_arrays(
        self, importer: Importer, source: Path, expected: dict[str, ExpectedCase]
    ) -> None:
        for pair in importer.discover(source):
            case, want = importer.load(pair), expected[pair.case_id]
            assert case.case_id == pair.case_id, (case.case_id, pair)
            image = (case.image.dtype, case.image.shape)
            assert case.image.dtype == np.float32 and case.image.ndim == 3, image
            assert case.label is not None, f"{pair.case_id}: no label"
            assert case.label.dtype == np.uint8, case.label.dtype
            assert case.label.shape == case.image.shape, (case.label.shape, case.image.shape)
            np.testing.assert_array_equal(case.image, want.image.astype(np.float32))
            table = (case.class_names, case.label_values, int(case.label.max()))
            assert len(case.class_names) == len(case.label_values) > table[2], table
            assert len(set(case.label_values)) == len(case.label_values), table
            np.testing.assert_array_equal(np.asarray(case.label_values)[case.label], want.label)
            np.testing.assert_allclose(case.spacing, want.spacing, rtol=1e-5)

    def test_the_canonical_grid_agrees_with_the_source_grid(
        self, importer: Importer, source: Path, expected: dict[str, ExpectedCase]
    ) -> None:
        case = importer.load(importer.discover(source)[0])
        matrix = case.canonical_affine[:3, :3]  # columns: voxel x, y, z of the array
        assert list(np.abs(matrix).argmax(0)) == [0, 1, 2] and (np.diag(matrix) > 0).all(), (
            f"canonical affine is not RAS+: {case.canonical_affine.tolist()}"
        )
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=0)[::-1], case.spacing, rtol=1e-5)
        expected_affine = canonical_affine(case.source_affine, case.source_shape)
        np.testing.assert_allclose(case.canonical_affine, expected_affine, atol=1e-6)
        assert case.label is not None
        assert to_source(case.label, case.source_affine).shape == case.source_shape

    def test_an_unreadable_file_is_named(
        self, importer: Importer, source: Path, expected: dict[str, ExpectedCase]
    ) -> None:
        bad = self.corrupt(importer.discover(source)[0])
        with pytest.raises(DataError, match=re.escape(bad.name)):
            for pair in importer.discover(source):
                importer.load(pair)

    def test_an_empty_or_absent_folder_is_named(self, importer: Importer, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        for folder in (tmp_path / "empty", tmp_path / "absent"):
            with pytest.raises(DataError, match=re.escape(str(folder))):
                importer.discover(folder)


class AugmentationConformance(_ComponentSuite):
    """The same generator state gives the same result; image and label keep shape and
    dtype, for volumes and for K-slice stacks with a central label; labels keep to the
    values they had (and background); each image channel reads its own ``fill``."""

    kind = "augmentation"
    label_set: ClassVar[tuple[int, ...]] = (0, 3, 7)  # not 0..n: labels must not be made up

    @pytest.fixture
    def augmentation(self, registry: Registry, component_name: str) -> Augmentation:
        augmentation: Augmentation = self.build(registry, component_name)
        return augmentation

    def batch(self, stack: bool = False, channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (2, c, z, 12, 10) in [-1, 1]; label (2, z or 1, 12, 10) from ``label_set``."""
        generator = torch.Generator().manual_seed(0)
        depth = 5 if stack else 6
        image = torch.rand(2, channels, depth, 12, 10, generator=generator) * 2 - 1
        shape = (2, 1 if stack else depth, 12, 10)
        index = torch.randint(0, len(self.label_set), shape, generator=generator)
        return image, torch.tensor(self.label_set)[index]

    def test_is_an_augmentation(self, augmentation: Augmentation) -> None:
        assert isinstance(augmentation, Augmentation)

    def test_the_same_generator_gives_the_same_result(self, augmentation: Augmentation) -> None:
        image, label = self.batch()
        before = image.clone(), label.clone()
        first = augmentation(image, label, torch.Generator().manual_seed(5))
        second = augmentation(image, label, torch.Generator().manual_seed(5))
        torch.testing.assert_close(first, second)
        torch.testing.assert_close((image, label), before)  # inputs are not modified

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_image_and_label_keep_shape_and_dtype(
        self, augmentation: Augmentation, stack: bool
    ) -> None:
        image, label = self.batch(stack)
        out_image, out_label = augmentation(image, label, torch.Generator().manual_seed(1))
        assert (out_image.shape, out_image.dtype) == (image.shape, image.dtype)
        assert (out_label.shape, out_label.dtype) == (label.shape, label.dtype)
        assert torch.isfinite(out_image).all(), "non-finite image values"

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_labels_keep_to_the_original_label_set(
        self, augmentation: Augmentation, stack: bool
    ) -> None:
        image, label = self.batch(stack)
        for seed in range(3):
            _, out = augmentation(image, label, torch.Generator().manual_seed(seed))
            made_up = set(out.flatten().tolist()) - set(self.label_set)
            assert not made_up, f"labels {sorted(made_up)} not in the input's {self.label_set}"

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_each_channel_reads_its_own_fill(self, augmentation: Augmentation, stack: bool) -> None:
        """Channels constant at their fill value stay so, wherever voxels come from."""
        _, label = self.batch(stack)
        fill = [0.25, -0.5]
        image = torch.tensor(fill).reshape(1, 2, 1, 1, 1).expand(2, 2, 5 if stack else 6, 12, 10)
        for seed in range(3):
            out, _ = augmentation(image.clone(), label, torch.Generator().manual_seed(seed), fill)
            torch.testing.assert_close(out, image, atol=1e-5, rtol=0)

    def test_a_fill_of_the_wrong_length_is_refused(self, augmentation: Augmentation) -> None:
        image, label = self.batch(channels=2)
        with pytest.raises(
            InputShapeError,
            match=r"fill has 3 value\(s\) \[-1.0, 0.0, 0.0\] for an image of 2 channel",
        ):
            augmentation(image, label, torch.Generator(), fill=[-1.0, 0.0, 0.0])

    def test_probability_zero_changes_nothing(
        self, registry: Registry, component_name: str
    ) -> None:
        if "probability" not in registry.parameters("augmentation", component_name):
            pytest.skip(f"augmentation {component_name!r} takes no probability")
        params = {**self.component_params(component_name), "probability": 0.0}
        augmentation = registry.build("augmentation", component_name, **params)
        image, label = self.batch()
        torch.testing.assert_close(augmentation(image, label, torch.Generator()), (image, label))

    def test_mismatched_shapes_are_refused(self, augmentation: Augmentation) -> None:
        image, label = self.batch()
        with pytest.raises(InputShapeError, match=r"expects image \(b, c, z, y, x\)"):
            augmentation(image[0], label, torch.Generator())
        with pytest.raises(InputShapeError, match="label depth 3 must equal the image depth 6"):
            augmentation(image, label[:, :3], torch.Generator())
        with pytest.raises(InputShapeError, match="does not match image"):
            augmentation(image, label[:, :, :5], torch.Generator())


class MetricConformance(_ComponentSuite):
    """A perfect prediction scores the best value, overlap beats no overlap, an empty
    mask against a non-empty one scores the worst and two empty ones NaN; symmetric
    unless the metric says ``symmetric = False``; millimetre metrics scale with the
    spacing and unitless ones ignore it; bad inputs are refused naming the metric.

    The best and worst values are 1 and 0 where higher is better, 0 and infinity
    (distances) otherwise: override :meth:`best` and :meth:`worst` for other ranges."""

    kind = "metric"
    shape: ClassVar[tuple[int, int, int]] = (12, 14, 16)

    @pytest.fixture
    def metric(self, registry: Registry, component_name: str) -> Metric:
        metric: Metric = self.build(registry, component_name)
        return metric

    def best(self, metric: Metric) -> float:
        return 1.0 if metric.higher_is_better else 0.0

    def worst(self, metric: Metric) -> float:
        return 0.0 if metric.higher_is_better else math.inf

    def box(self, low: tuple[int, int, int], size: tuple[int, int, int]) -> NDArray[np.bool_]:
        mask = np.zeros(self.shape, bool)
        mask[tuple(slice(a, a + n) for a, n in zip(low, size, strict=True))] = True
        return mask

    def better(self, metric: Metric, a: float, b: float) -> bool:
        return a > b if metric.higher_is_better else a < b

    def test_is_a_metric(self, metric: Metric) -> None:
        assert isinstance(metric, Metric) and metric.name

    def test_a_perfect_prediction_scores_the_best_value(self, metric: Metric) -> None:
        target = self.box((2, 3, 4), (5, 6, 7))
        value = metric(target.copy(), target, (1.0, 1.0, 1.0))
        assert isinstance(value, float)
        assert value == pytest.approx(self.best(metric), abs=1e-9)

    def test_overlap_beats_a_disjoint_prediction(self, metric: Metric) -> None:
        target = self.box((1, 1, 1), (5, 5, 5))
        shifted, disjoint = self.box((1, 1, 3), (5, 5, 5)), self.box((6, 8, 9), (5, 5, 5))
        spacing = (1.0, 1.0, 1.0)
        perfect, partial, apart = (metric(p, target, spacing) for p in (target, shifted, disjoint))
        assert self.better(metric, perfect, partial) and self.better(metric, partial, apart)
        if metric.higher_is_better:  # overlap measures: no overlap is the worst there is
            assert apart == pytest.approx(self.worst(metric), abs=1e-9)

    def test_empty_masks(self, metric: Metric) -> None:
        empty, full = np.zeros(self.shape, bool), self.box((2, 2, 2), (4, 4, 4))
        assert math.isnan(metric(empty, empty.copy(), (1.0, 1.0, 1.0)))
        for prediction, target in ((empty, full), (full, empty)):
            assert metric(prediction, target, (1.0, 1.0, 1.0)) == self.worst(metric)

    def test_symmetric_as_declared(self, metric: Metric) -> None:
        a, b = self.box((1, 2, 3), (6, 5, 4)), self.box((3, 4, 2), (3, 8, 6))
        forward, backward = metric(a, b, (1.0, 0.8, 0.7)), metric(b, a, (1.0, 0.8, 0.7))
        if getattr(metric, "symmetric", True):
            assert forward == pytest.approx(backward, rel=1e-9)
        else:
            assert forward != pytest.approx(backward, rel=1e-9)

    def test_spacing_scales_millimetres_and_nothing_else(self, metric: Metric) -> None:
        a, b = self.box((1, 2, 3), (6, 5, 4)), self.box((3, 4, 2), (3, 8, 6))
        one, two = metric(a, b, (1.0, 1.0, 1.0)), metric(a, b, (2.0, 2.0, 2.0))
        if metric.unit == "mm":
            assert two == pytest.approx(2 * one, rel=1e-6)
        elif not metric.unit:
            assert two == pytest.approx(one, rel=1e-9)

    def test_bad_inputs_are_refused_naming_the_metric(self, metric: Metric) -> None:
        name = re.escape(metric.name)
        ones = np.ones((4, 4, 4), bool)
        with pytest.raises(
            InputShapeError,
            match=rf"{name}: prediction shape \(4, 4, 4\) differs from target \(4, 4, 5\)",
        ):
            metric(ones, np.ones((4, 4, 5), bool), (1, 1, 1))
        with pytest.raises(InputShapeError, match=rf"{name}: spacing \(1, 0, 1\) must be 3 sizes"):
            metric(ones, ones, (1, 0, 1))


# --------------------------------------------------------------------------- method


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


class MethodConformance(_ComponentSuite):
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
        from duoseg.core.config import DataConfig, ExperimentConfig, TrainConfig
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


# --------------------------------------------------------------------------- pytest plugin
# Registered as the pytest plugin "duoseg" (entry-point group pytest11).


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(kind): a test of a duoseg conformance suite (duoseg.core.testing)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = getattr(item, "cls", None)
        if isinstance(suite, type) and issubclass(suite, _ComponentSuite):
            item.add_marker(getattr(pytest.mark, MARKER)(kind=suite.kind))


@pytest.fixture(scope="session")
def duoseg_registry(request: pytest.FixtureRequest) -> Registry:
    """The session's component registry (built-ins and installed plugins)."""
    return session_registry(request.config)


@pytest.fixture(scope="session")
def duoseg_phantom_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A Zarr cache of two small phantom cases, built once per session."""
    return phantom_cache_path(request.config, tmp_path_factory)


def _crop(
    array: np.ndarray[Any, Any], origin: tuple[int, ...], size: tuple[int, ...], fill: float
) -> np.ndarray[Any, Any]:
    # Independent of read_padded, which is what is checked: pad everywhere, then slice.
    padded = np.pad(array, [(s, s) for s in size], constant_values=fill)
    return padded[tuple(slice(o + s, o + 2 * s) for o, s in zip(origin, size, strict=True))]


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2])
