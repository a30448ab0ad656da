"""One preprocessing record (issue 12, item 4): written by the cache build, copied into
every checkpoint, used by prediction of new images through the same builder, and a
prediction from data prepared otherwise is refused naming both values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from duoseg.apps.cli import EXIT_BAD_INPUT, main
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.preprocessing import normalise
from duoseg.core.errors import DataError
from duoseg.core.inference.model import case_from_image, load_model
from duoseg.core.interfaces.importer import SourcePair
from duoseg.core.records.preprocessing import Level, Preprocessing
from duoseg.core.training.checkpoint import load_checkpoint
from duoseg.core.training.trainer import LAST


def test_the_cache_and_the_checkpoint_carry_the_record(cache, two_stage_run) -> None:
    record = open_cache(cache).preprocessing
    assert record.targets() == {"coarse": 3.0, "baseline": 2.0}
    assert record.percentiles == (0.5, 99.5)
    assert record.class_names[:2] == ("background", "Myo") and record.label_values[:2] == (0, 205)
    stored = load_checkpoint(two_stage_run / LAST, load_plugins()).data
    # The model records the levels its method reads: two_stage the coarse one only.
    assert stored == {**record.as_dict(), "levels": {"coarse": 3.0}}


def rebuilt(cache: Path, tmp_path: Path, *flags: str) -> Path:
    target = tmp_path / "other.zarr"
    assert main(["cache", "build", str(cache.parent / "src"), str(target), *flags]) == 0
    return target


def test_predicting_a_cache_prepared_otherwise_is_refused_naming_both_values(
    cache, two_stage_run, tmp_path, capsys
) -> None:
    other = rebuilt(cache, tmp_path, "--percentiles", "2", "98")
    capsys.readouterr()
    code = main(["predict", str(two_stage_run), str(other), str(tmp_path / "out.zarr")])
    error = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"cache {other} was prepared with percentiles = [2.0, 98.0]" in error, error
    assert f"the model of {two_stage_run} expects percentiles = [0.5, 99.5]" in error, error


def test_predicting_a_cache_with_another_coarse_level_names_both_and_the_option(
    cache, two_stage_run, tmp_path, capsys
) -> None:
    other = rebuilt(cache, tmp_path, "--coarse-spacing", "6")
    capsys.readouterr()
    code = main(["predict", str(two_stage_run), str(other), str(tmp_path / "out.zarr")])
    error = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"cache {other} has level 'coarse' at 6 mm, not at 3 mm, which the model of " in error
    assert f"rebuild it with `duoseg cache build SRC_DIR {other} --level coarse=3`" in error


def test_new_images_are_prepared_by_the_cache_builds_own_builder(cache, two_stage_run) -> None:
    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    importer = registry.build("importer", "mmwhs")
    case_id = "ct_train_1002"
    source = cache.parent / "src"
    pair = SourcePair(case_id, source / f"{case_id}_image.nii.gz", None)
    fresh = case_from_image(importer.load(pair), model)
    cached = open_cache(cache).case(case_id)
    assert fresh.meta.coarse == cached.meta.coarse
    assert fresh.meta.normalisation == cached.meta.normalisation
    np.testing.assert_array_equal(fresh.image[...], cached.image[...])
    np.testing.assert_array_equal(fresh.coarse_image[...], cached.coarse_image[...])


def test_rebuilding_with_other_settings_prepares_every_case_again(cache, tmp_path) -> None:
    registry = load_plugins()
    target = tmp_path / "c.zarr"
    source = cache.parent / "src"

    def build(spacing: float) -> list[str]:
        importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
        levels = [Level("coarse", spacing)]
        report = build_cache(source, target, importer=importer, store=store, levels=levels)
        return report.written

    cases = open_cache(cache).cases()
    assert build(3.0) == cases
    assert build(3.0) == []  # nothing changed: every case kept
    assert build(6.0) == cases  # another coarse grid: no case kept from the 3 mm build
    reader = open_cache(target)
    assert reader.preprocessing.coarse_target_mm == 6.0
    assert {reader.case(c).meta.coarse.target_mm for c in cases} == {6.0}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"percentiles": (60.0, 40.0)}, r"percentiles = \[60.0, 40.0\]: need 0 <= low < high"),
        ({"levels": (Level("baseline", 2.0),)}, r"levels \['baseline'\]: the 'coarse' level is"),
        ({"levels": (Level("coarse", 2.0),) * 2}, r"levels \['coarse', 'coarse'\]: a name appears"),
        ({"class_names": ("background",)}, r"class_names \['background'\] and label_values"),
    ],
)
def test_bad_records_are_refused_with_the_value(fields, message) -> None:
    with pytest.raises(DataError, match=message):
        Preprocessing(**fields)


def test_a_malformed_stored_record_names_where_it_was_read() -> None:
    with pytest.raises(DataError, match=r"run/last.safetensors: preprocessing record is malformed"):
        Preprocessing.from_dict({"percentiles": [0.5, 99.5]}, where="run/last.safetensors")


def test_resuming_on_a_cache_rebuilt_with_other_settings_is_refused(
    cache, tmp_path, capsys
) -> None:
    from tests.runs import TWO_STAGE

    registry = load_plugins()
    target = tmp_path / "c.zarr"

    def build(spacing: float) -> None:
        importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
        build_cache(cache.parent / "src", target, importer=importer, store=store,
                    levels=[Level("coarse", spacing)])  # fmt: skip

    build(3.0)
    config = tmp_path / "config.toml"
    config.write_text(TWO_STAGE.replace("iterations = [2, 1, 1, 1]", "iterations = [1, 0, 0, 0]"))
    train = ["train", str(config), "--cache", str(target), "--out", str(tmp_path / "run")]
    assert main(train) == 0
    build(6.0)  # the same path, another coarse grid
    capsys.readouterr()
    assert main([*train, "--resume"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert f"--resume: cache {target} has level 'coarse' at 6 mm, not at 3 mm" in error, error
    assert "which checkpoint" in error, error


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_normalisation_is_the_clipped_linear_map_to_minus_one_one(dtype) -> None:
    image = (np.random.default_rng(0).standard_normal((6, 20, 30)) * 300).astype(dtype)
    scaled, record = normalise(image, (0.5, 99.5))
    low, high = record["low"], record["high"]
    expected = ((np.clip(image, low, high) - low) * (2.0 / (high - low)) - 1.0).astype(np.float16)
    assert scaled.dtype == np.float16 and np.array_equal(scaled, expected)
    assert scaled.min() == -1 and scaled.max() == 1
