"""Each method's working grid in the cache (issue 24, item 4): named levels written by
``cache build``, recorded in the preprocessing record, declared by the methods and
required by ``train`` and ``predict``; the 2 mm baseline samples its level."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from duoseg.apps.cli import EXIT_BAD_INPUT, main
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.grid import downsample_image, downsample_label, grid_shape
from duoseg.core.interfaces.method import Method
from duoseg.core.interfaces.sampler import IMAGE_PAD, LABEL_PAD, read_padded
from duoseg.core.interfaces.store import DEFAULT_CHUNKS
from duoseg.core.records.case import CaseMeta
from duoseg.core.records.config import TrainConfig
from duoseg.core.records.preprocessing import Level, Preprocessing
from duoseg.core.training.weights import read_weights
from duoseg.plugins.methods.resampled import Resampled
from duoseg.plugins.methods.two_stage import TwoStage
from safetensors.torch import save_file

from tests.runs import BASELINE


def test_methods_declare_the_levels_they_read() -> None:
    train = TrainConfig(baseline_spacing=1.5)
    assert Resampled().levels(train) == (Level("baseline", 1.5),)
    assert TwoStage().levels(train) == ()  # the coarse level is in every cache
    assert TwoStage(coarse_mm=6.0).levels(train) == (Level("coarse", 6.0),)
    assert Method.levels(Resampled(), train) == ()  # the interface's default: none


def build(src: Path, target: Path, *flags: str) -> Path:
    assert main(["cache", "build", str(src), str(target), *flags]) == 0
    return target


def test_cache_build_writes_each_level_with_its_grid_and_records_it(cache, tmp_path) -> None:
    target = build(cache.parent / "src", tmp_path / "c.zarr", "--level", "baseline=2.5")
    reader = open_cache(target)
    assert reader.preprocessing.targets() == {"coarse": 3.0, "baseline": 2.5}
    record = json.loads((target / "duoseg-complete.json").read_text())
    assert (
        record["version"] == 3
        and record["preprocessing"]["levels"] == reader.preprocessing.targets()
    )
    for case_id in reader.cases():
        case = reader.case(case_id)
        meta = case.meta
        for name, target_mm in (("coarse", 3.0), ("baseline", 2.5)):
            level = meta.level(name)
            assert level.target_mm == target_mm
            assert level.shape == grid_shape(meta.shape, meta.spacing, target_mm)
            extent = np.asarray(meta.shape) * np.asarray(meta.spacing)
            np.testing.assert_allclose(level.spacing, extent / np.asarray(level.shape))
            arrays = case.level(name)
            assert arrays.image.shape == arrays.label.shape == level.shape
            chunks = zip(DEFAULT_CHUNKS, level.shape, strict=True)  # as the full arrays'
            assert arrays.image.chunks == tuple(min(c, n) for c, n in chunks)
    assert reader.verify() == []  # every level's chunks against their digests


def test_cli_level_options_are_checked_and_coarse_spacing_is_the_coarse_level(
    cache, tmp_path, capsys
) -> None:
    src = cache.parent / "src"
    target = build(src, tmp_path / "c.zarr", "--coarse-spacing", "6")
    assert open_cache(target).preprocessing.targets() == {"coarse": 6.0}
    for flags, message in [
        (("--level", "baseline"), "--level 'baseline' is not NAME=MM"),
        (("--level", "Base=2"), "level name 'Base'"),
        (("--level", "baseline=-1"), "level baseline: target spacing -1.0 mm must be > 0"),
        (
            ("--level", "coarse=4", "--coarse-spacing", "3"),
            "--coarse-spacing 3 and --level coarse=4",
        ),
    ]:
        assert (
            main(["cache", "build", str(src), str(tmp_path / "d.zarr"), *flags]) == EXIT_BAD_INPUT
        )
        assert message in capsys.readouterr().err


def test_cache_build_format_is_a_deprecated_alias_of_store(cache, tmp_path, capsys) -> None:
    target = tmp_path / "c.h5"
    assert main(["cache", "build", str(cache.parent / "src"), str(target), "--format", "hdf5"]) == 0
    error = capsys.readouterr().err
    assert "cache build --format is deprecated" in error and "use --store hdf5" in error, error
    assert open_cache(target).record["store"] == "hdf5"


def train_baseline(tmp_path: Path, cache: Path) -> int:
    config = tmp_path / "baseline.toml"
    config.write_text(BASELINE)
    return main(["train", str(config), "--cache", str(cache), "--out", str(tmp_path / "run")])


def test_train_refuses_a_cache_without_the_methods_level(cache, tmp_path, capsys) -> None:
    target = build(cache.parent / "src", tmp_path / "coarse_only.zarr")
    capsys.readouterr()
    assert train_baseline(tmp_path, target) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    expected = (
        f"cache {target} has no level 'baseline' at 2 mm, which method resampled needs "
        f"(levels: 'coarse' at 3 mm); add it with `duoseg cache build SRC_DIR {target} "
        "--level baseline=2`"
    )
    assert expected in error, error
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_train_refuses_a_level_at_another_spacing(cache, tmp_path, capsys) -> None:
    target = build(cache.parent / "src", tmp_path / "c.zarr", "--level", "baseline=4")
    capsys.readouterr()
    assert train_baseline(tmp_path, target) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "has level 'baseline' at 4 mm, not at 2 mm, which method resampled needs" in error
    assert f"rebuild it with `duoseg cache build SRC_DIR {target} --level baseline=2`" in error


def test_predict_refuses_a_model_whose_record_lacks_the_methods_level(
    baseline_run, cache, tmp_path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(baseline_run, run)
    for checkpoint in run.glob("*.safetensors"):
        tensors, metadata = read_weights(checkpoint)
        meta = json.loads(metadata["duoseg"])
        meta["data"]["levels"] = {"coarse": 3.0}  # as if trained without the 2 mm level
        save_file(tensors, str(checkpoint), metadata={**metadata, "duoseg": json.dumps(meta)})
    code = main(["predict", str(run), str(cache), str(tmp_path / "out.zarr")])
    error = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert f"the model of {run} has no level 'baseline' at 2 mm, which method resampled" in error
    assert (
        "train on a cache built with `duoseg cache build SRC_DIR CACHE --level baseline=2`" in error
    )
    assert not (tmp_path / "out.zarr").exists()


def test_the_baseline_model_records_its_level_and_predicts_new_images(baseline_run) -> None:
    from duoseg.core.training.checkpoint import load_checkpoint

    data = load_checkpoint(baseline_run / "last.safetensors", load_plugins()).data
    assert data["levels"] == {"coarse": 3.0, "baseline": 2.0}


# ---------------------------------------------------------------- before levels existed


def test_records_written_before_levels_read_as_what_they_prepared() -> None:
    old = {"percentiles": [0.5, 99.5], "coarse_spacing": 6.0, "class_names": ["background"],
           "label_values": [0], "baseline_spacing": None}  # fmt: skip
    assert Preprocessing.from_dict(old, where="x").targets() == {"coarse": 6.0}
    baseline = {**old, "baseline_spacing": 2.0}  # a resampled baseline's checkpoint
    assert Preprocessing.from_dict(baseline, where="x").targets() == {
        "coarse": 6.0,
        "baseline": 2.0,
    }
    # A coarse-only record hashes as before: an old cache's cases stay current.
    assert Preprocessing.with_targets({"coarse": 3.0}).digest() == "e1afaa36d97a6788"


def test_a_version_2_cache_reads_as_coarse_only_and_baseline_training_says_what_to_add(
    cache, tmp_path, capsys
) -> None:
    target = build(cache.parent / "src", tmp_path / "old.zarr")
    _as_version_2(target)
    reader = open_cache(target)
    assert reader.preprocessing.targets() == {"coarse": 3.0}
    case = reader.case(reader.cases()[0])
    assert case.meta.coarse.target_mm == 3.0 and case.coarse_image.shape == case.meta.coarse.shape
    assert reader.verify() == []
    capsys.readouterr()
    assert train_baseline(tmp_path, target) == EXIT_BAD_INPUT
    assert f"add it with `duoseg cache build SRC_DIR {target} --level baseline=2`" in (
        capsys.readouterr().err
    )
    # Adding the level prepares every case again, into the current layout.
    build(cache.parent / "src", target, "--level", "baseline=2")
    assert open_cache(target).preprocessing.targets() == {"coarse": 3.0, "baseline": 2.0}


def _as_version_2(target: Path) -> None:
    """Rewrite a coarse-only cache's records as duoseg wrote them before levels."""
    record_path = target / "duoseg-complete.json"
    record = json.loads(record_path.read_text())
    prep = record["preprocessing"]
    coarse = prep.pop("levels")["coarse"]
    record.update(version=2, preprocessing={**prep, "coarse_spacing": coarse,
                                            "baseline_spacing": None})  # fmt: skip
    record_path.write_text(json.dumps(record))
    for group in (target / "cases").iterdir():
        document = json.loads((group / "zarr.json").read_text())
        meta = document["attributes"]["duoseg"]
        level = meta.pop("levels")["coarse"]
        meta.update(coarse_shape=level["shape"], coarse_spacing=level["spacing"],
                    coarse_target=level["target_mm"])  # fmt: skip
        CaseMeta.from_json(json.dumps(meta), where="check")
        (group / "zarr.json").write_text(json.dumps(document))


# ---------------------------------------------------------------- the baseline's patches


@pytest.fixture(scope="module")
def half_mm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms at 0.5 mm (a 2 mm voxel is 4^3 of them) with the 2 mm level."""
    from tests.core.test_recipe import build as build_cases
    from tests.core.test_recipe import phantom_with

    cases = [phantom_with(0.5, n, (96, 80, 64), binary=False) for n in range(2)]
    return build_cases(tmp_path_factory.mktemp("half"), cases, {"coarse": 3.0, "baseline": 2.0})


def on_the_fly(case, origin: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The patch as the baseline made it before levels: the full-resolution box covering
    ``size`` voxels of 2 mm, area-averaged (image) and majority-voted (label)."""
    box = np.full(3, size * 4)
    shape = (size, size, size)
    image = downsample_image(read_padded(case.image, origin, box, IMAGE_PAD), shape)
    label = downsample_label(read_padded(case.label, origin, box, LABEL_PAD), shape, 8)
    return image.astype(np.float32), label.astype(np.int64)


def test_baseline_patches_from_the_level_equal_the_resampled_full_resolution_box(
    half_mm_cache,
) -> None:
    registry = load_plugins()
    sampler = registry.build("sampler", "class_balanced", sizes=[8, 12], uniform_fraction=0.3)
    sampler.level = "baseline"
    reader = open_cache(half_mm_cache)
    for index in range(12):
        case = reader.case(reader.cases()[index % 2])
        sample = sampler.sample(case, epoch=0, index=index)
        size = sample.image.shape[-1]
        assert sample.level == "baseline" and sample.label.shape == (size,) * 3
        # Its box, 4 full-resolution voxels per level voxel, resampled on the fly.
        image, label = on_the_fly(case, 4 * np.asarray(sample.origin), size)
        np.testing.assert_allclose(sample.image[0], image, atol=1e-3)
        np.testing.assert_array_equal(sample.label, label)


def test_the_level_patch_is_centred_within_one_level_voxel_of_the_drawn_voxel(
    half_mm_cache,
) -> None:
    sampler = load_plugins().build("sampler", "class_balanced", sizes=[8])
    sampler.level = "baseline"
    case = open_cache(half_mm_cache).case(open_cache(half_mm_cache).cases()[0])
    rng = np.random.default_rng(0)
    aligned = [[16, 20, 24], [40, 32, 8], [0, 60, 92]]  # multiples of 4: one 2 mm voxel
    for centre in [*rng.integers(0, case.meta.shape, size=(20, 3)), *np.asarray(aligned)]:
        sample = sampler._patch(case, centre, np.full(3, 8))
        old_origin = centre - 16  # the box the baseline read before: 32 voxels around it
        shift = 4 * np.asarray(sample.origin) - old_origin
        assert np.all(np.abs(shift) <= 3), (centre, sample.origin)
        if np.all(centre % 4 == 0):  # aligned: the very patch the baseline drew before
            image, label = on_the_fly(case, old_origin, 8)
            np.testing.assert_allclose(sample.image[0], image, atol=1e-3)
            np.testing.assert_array_equal(sample.label, label)
