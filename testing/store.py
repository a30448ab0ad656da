"""The store contract: write, read, verify, refuse damage."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from duoseg.core.data.preprocessing import class_counts
from duoseg.core.errors import DataError
from duoseg.core.interfaces.store import (
    CaseArrays,
    LevelArrays,
    VolumeStore,
    array_digest,
    completion_record,
)
from duoseg.core.records.case import CaseMeta, LevelMeta
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)


class StoreConformance(ComponentSuite):
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


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2])
