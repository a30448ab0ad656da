"""The importer contract, on two small phantoms written as the importer's source files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pytest
from duoseg.core.data.orientation import canonical_affine, to_source
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import Importer, SourcePair
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)
from numpy.typing import NDArray


class ExpectedCase(NamedTuple):
    """What an importer must make of one source case, in canonical (z, y, x) RAS+."""

    image: NDArray[Any]
    label: NDArray[Any]  # the source's label values, not class indices
    spacing: tuple[float, float, float]  # z, y, x mm


class ImporterConformance(ComponentSuite):
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
        from duoseg.phantoms import make_case, write_case

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

    def test_images_for_prediction_are_its_cases_without_labels(
        self, importer: Importer, source: Path, expected: dict[str, ExpectedCase]
    ) -> None:
        """An importer that reads images for ``duoseg predict`` (``images``) finds the
        cases' images, without labels, and reads them as discovery's pairs are read."""
        pairs = importer.images(source, None)
        if not pairs:
            pytest.skip("the importer reads no images for prediction")
        assert [pair.case_id for pair in pairs] == sorted(expected), pairs
        assert all(pair.label is None for pair in pairs), pairs
        first = sorted(expected)[0]
        assert [p.case_id for p in importer.images(source, [first])] == [first]
        case = importer.load(pairs[0])
        assert case.label is None
        np.testing.assert_array_equal(case.image, expected[first].image.astype(np.float32))

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
