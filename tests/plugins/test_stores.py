"""The cache on both stores: contents, laziness, incremental and atomic builds, damage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from duoseg.apps.cli import main
from duoseg.core import Registry
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache, build_lock
from duoseg.core.errors import DataError
from duoseg.phantoms import make_case, write_case
from duoseg.plugins.importers import MMWHSImporter

SIZE = (40, 36, 24)
CHUNKS = (8, 16, 16)
STORES = {"zarr": "cache.zarr", "hdf5": "cache.h5"}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    for number in range(3):
        write_case(make_case(1, number, "ct", SIZE), folder)
    return folder


def build(registry: Registry, source: Path, target: Path, store: str, **kwargs):
    return build_cache(source, target, importer=MMWHSImporter(),
                       store=registry.build("store", store, chunks=CHUNKS), **kwargs)  # fmt: skip


@pytest.mark.parametrize("store", STORES)
def test_a_built_cache_holds_the_documented_contents(registry, source, tmp_path, store) -> None:
    target = tmp_path / STORES[store]
    report = build(registry, source, target, store)
    assert report.written == ["ct_train_1001", "ct_train_1002", "ct_train_1003"]
    with open_cache(target, registry) as cache:
        case = cache.case("ct_train_1002")
        imported = MMWHSImporter().load(MMWHSImporter().discover(source)[1])
        image = case.image[...]
        assert image.dtype == np.float16 and image.min() >= -1 and image.max() <= 1
        np.testing.assert_array_equal(case.label[...], imported.label)
        assert case.meta.shape == imported.image.shape
        assert case.meta.coarse.shape == case.coarse_image.shape == case.coarse_label.shape
        np.testing.assert_allclose(np.array(case.meta.coarse.spacing), 3.0, rtol=0.2)
        counts = case.class_counts
        assert counts.shape == (3, 3, 3, 8)
        np.testing.assert_array_equal(
            counts.sum((0, 1, 2)), np.bincount(imported.label.ravel(), minlength=8)
        )
        assert case.meta.normalisation["percentile_high"] == 99.5
        assert set(case.meta.checksums) == {"image", "label", "plan"}  # sources + preprocessing
        np.testing.assert_array_equal(case.image[2:9, 5:30, 3], image[2:9, 5:30, 3:4])
        assert cache.verify() == []


@pytest.mark.parametrize("store", STORES)
def test_rebuilding_is_incremental(registry, source, tmp_path, store) -> None:
    target = tmp_path / STORES[store]
    build(registry, source, target, store)
    assert build(registry, source, target, store).skipped == [
        "ct_train_1001",
        "ct_train_1002",
        "ct_train_1003",
    ]
    write_case(make_case(9, 1, "ct", SIZE), source)  # a changed source file
    (source / "ct_train_1003_image.nii.gz").unlink()
    (source / "ct_train_1003_label.nii.gz").unlink()
    report = build(registry, source, target, store)
    assert (report.written, report.skipped, report.dropped) == (
        ["ct_train_1002"],
        ["ct_train_1001"],
        ["ct_train_1003"],
    )
    with open_cache(target, registry) as cache:
        assert cache.cases() == ["ct_train_1001", "ct_train_1002"]
        assert cache.verify() == []


@pytest.mark.parametrize("store", STORES)
def test_a_failed_build_leaves_no_complete_cache_and_a_rerun_finishes(
    registry, source, tmp_path, store
) -> None:
    target = tmp_path / STORES[store]
    bad = source / "ct_train_1003_label.nii.gz"
    good = bad.read_bytes()
    bad.write_bytes(b"garbage")
    with pytest.raises(
        DataError, match=r"ct_train_1003_label\.nii\.gz: field header: not a readable NIfTI file"
    ):
        build(registry, source, target, store)
    if target.exists():
        with pytest.raises(DataError, match="cache is incomplete"):
            open_cache(target, registry)
    if store == "zarr":
        assert not (target / "cases/ct_train_1003").exists()  # no entry for the bad case
    bad.write_bytes(good)
    report = build(registry, source, target, store)
    assert "ct_train_1003" in report.written
    assert open_cache(target, registry).cases() == [
        "ct_train_1001",
        "ct_train_1002",
        "ct_train_1003",
    ]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_damaged_chunks_are_named_by_read_and_verify(registry, source, tmp_path, capsys) -> None:
    target = tmp_path / "cache.zarr"
    build(registry, source, target, "zarr")
    (target / "cases/ct_train_1001/label/c/1/0/1").unlink()
    chunk = target / "cases/ct_train_1002/image/c/0/1/0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    assert main(["cache", "verify", str(target)]) == 1
    out = capsys.readouterr().out
    assert "case ct_train_1001, array label: chunk (1, 0, 1) is missing" in out
    assert "case ct_train_1002, array image: chunk (0, 1, 0) is truncated: 100 of 4096 bytes" in out
    case = open_cache(target, registry).case("ct_train_1002")
    with pytest.raises(DataError, match=r"chunk \(0, 1, 0\) is truncated"):
        case.image[...]


def test_a_silently_changed_chunk_fails_verify(registry, source, tmp_path) -> None:
    target = tmp_path / "cache.zarr"
    build(registry, source, target, "zarr")
    chunk = target / "cases/ct_train_1001/image/c/0/0/0"
    chunk.write_bytes(bytes(len(chunk.read_bytes())))  # right size, all zeros
    (problem,) = open_cache(target, registry).verify()
    assert problem == (
        f"cache {target}, case ct_train_1001, array image: "
        "contents differ from the digest recorded at build time"
    )


def test_unsafe_hdf5_objects_are_refused_before_reading(registry, source, tmp_path) -> None:
    target = tmp_path / "cache.h5"
    build(registry, source, target, "hdf5")
    with h5py.File(target, "r+") as handle:
        handle["cases/ct_train_1001/outside"] = h5py.ExternalLink("/etc/passwd.h5", "/x")
    with pytest.raises(DataError, match=r"ExternalLink at /cases/ct_train_1001/outside is refused"):
        open_cache(target, registry)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("data_type", "object", "data type 'object' is refused"),
     ("codecs", [{"name": "bytes"}, {"name": "gzip"}], r"codecs \['bytes', 'gzip'\] are refused")],
)  # fmt: skip
def test_unsafe_zarr_metadata_is_refused(
    registry, source, tmp_path, *, field, value, message
) -> None:
    target = tmp_path / "cache.zarr"
    build(registry, source, target, "zarr")
    meta_path = target / "cases/ct_train_1001/image/zarr.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message):
        open_cache(target, registry).case("ct_train_1001")


def test_a_second_build_names_the_lock_holder(registry, source, tmp_path) -> None:
    target = tmp_path / "cache.zarr"
    with (
        build_lock(target),
        pytest.raises(DataError, match=rf"another build holds the cache lock: pid {os.getpid()}"),
    ):
        build(registry, source, target, "zarr")


def test_a_folder_that_is_not_a_cache_is_never_overwritten(registry, source, tmp_path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="exists and is not a duoseg Zarr cache; refusing to write"):
        build(registry, source, target, "zarr")
    assert (target / "thesis.tex").read_text() == "years of work"


def test_unsafe_case_ids_are_refused(registry, tmp_path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    write_case(make_case(0, 0, "ct", SIZE), source)
    for kind in ("image", "label"):
        (source / f"ct_train_1001_{kind}.nii.gz").rename(source / f"..evil_{kind}.nii.gz")
    with pytest.raises(DataError, match=r"case id '..evil' is not a safe name"):
        build(registry, source, tmp_path / "cache.zarr", "zarr")


def test_open_cache_explains_what_it_cannot_open(registry, tmp_path) -> None:
    with pytest.raises(DataError, match="cache not found"):
        open_cache(tmp_path / "absent", registry)
    (tmp_path / "plain").mkdir()
    with pytest.raises(
        DataError, match=r"not a duoseg cache that any store recognises \(stores: hdf5, zarr\)"
    ):
        open_cache(tmp_path / "plain", registry)


def test_the_cli_builds_both_formats(source, tmp_path, capsys) -> None:
    assert main(["cache", "build", str(source), str(tmp_path / "c.h5"), "--store", "hdf5"]) == 0
    assert main(["cache", "verify", str(tmp_path / "c.h5")]) == 0
    assert "3 cases, 0 problem(s)" in capsys.readouterr().out
    assert (
        main(
            [
                "cache",
                "build",
                str(source),
                str(tmp_path / "c.zarr"),
                "--importer",
                "nifti",
                "--labels",
                "LV=500,Myo",
            ]
        )
        == 2
    )
    assert "--labels item 'Myo' is not NAME=VALUE" in capsys.readouterr().err
