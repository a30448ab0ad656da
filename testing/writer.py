"""The writer contract: a format fits the OUTPUT it names as its example, writes a
case slab by slab through its sink, says the case is finished once it is (what a
resumed prediction skips), and refuses probabilities it cannot store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import PredictError
from duoseg.core.inference.outputs import prepare_output
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.interfaces.writer import Writer
from duoseg.core.registry import Registry
from duoseg.testing.suite import ComponentSuite, phantom_cache_path


class WriterConformance(ComponentSuite):
    """A writer's declarations and its sink, on a case of the session's phantom cache.
    Writers whose format references DICOM series (``needs_series``) are checked for
    their declarations only: writing them needs a series."""

    kind = "writer"
    slab = 5  # slices per write, so that a case takes several

    @pytest.fixture
    def case(
        self,
        registry: Registry,
        request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[CacheCase]:
        """The first case of the session's phantom cache."""
        with open_cache(phantom_cache_path(request.config, tmp_path_factory), registry) as cache:
            yield cache.case(cache.cases()[0])

    @pytest.fixture
    def writer(self, registry: Registry, component_name: str) -> Writer:
        built: Writer = self.build(registry, component_name)
        return built

    def test_the_example_output_fits_and_the_help_is_one_line(
        self, writer: Writer, tmp_path: Path
    ) -> None:
        assert writer.fits(tmp_path / writer.example_output)
        assert writer.output_help and "\n" not in writer.output_help

    def test_a_case_is_written_slab_by_slab_and_then_finished(
        self, writer: Writer, case: CacheCase, tmp_path: Path
    ) -> None:
        if writer.needs_series:
            pytest.skip("the format references a DICOM series")
        output = tmp_path / writer.example_output
        prepare_output(output, overwrite=False, run={"format": "conformance"})
        sink = writer.sink(output, {})
        assert not sink.finished(case.case_id)
        assert sink.begin(case.meta, probabilities=False) == 0
        assert case.label is not None, "the phantom cache is labelled"
        labels = case.label[...]
        for z in range(0, case.meta.shape[0], self.slab):
            sink.write(z, labels[z : z + self.slab], None)
        sink.end(case.meta, None)
        assert sink.finished(case.case_id)
        again = writer.sink(output, {})
        assert again.finished(case.case_id)
        assert again.begin(case.meta, probabilities=False) == case.meta.shape[0]  # resumes

    def test_probabilities_are_refused_unless_stored(
        self, writer: Writer, case: CacheCase, tmp_path: Path
    ) -> None:
        if writer.probabilities or writer.needs_series:
            pytest.skip("the format stores probabilities, or needs a DICOM series")
        output = tmp_path / writer.example_output
        prepare_output(output, overwrite=False, run={"format": "conformance"})
        with pytest.raises(PredictError):
            writer.sink(output, {}).begin(case.meta, probabilities=True)
