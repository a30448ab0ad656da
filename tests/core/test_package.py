"""Model packages (issue 26): ``duoseg export RUN MODEL.zip``, prediction straight from
the zip, and every refusal naming the package and the member."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from duoseg.apps.cli import EXIT_BAD_INPUT, main
from duoseg.core import load_plugins
from duoseg.core.inference.evaluate import run_labels
from duoseg.core.inference.package import MANIFEST, MEMBERS, read_package
from duoseg.core.training.checkpoint import load_checkpoint, model_checkpoint

MMWHS = {"Myo": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850}


@pytest.fixture(scope="module")
def package(two_stage_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("package") / "model.zip"
    flags = ["--description", "tiny phantom model", "--licence", "CC-BY-4.0",
             "--citation", "Wang et al., STACOM 2018"]  # fmt: skip
    assert main(["export", str(two_stage_run), str(target), *flags]) == 0
    return target


def predicted(model: Path, source: Path, out: Path) -> nib.Nifti1Image:
    assert main(["predict", str(model), str(source), str(out)]) == 0
    return nib.load(out)


def source_image(cache: Path, case: str = "ct_train_1003") -> Path:
    return Path(cache).parent / "src" / f"{case}_image.nii.gz"


@pytest.mark.parametrize("run", ["two_stage_run", "baseline_run"])
def test_predicting_from_the_zip_equals_predicting_from_the_run(run, cache, tmp_path,
                                                                request) -> None:  # fmt: skip
    run_dir = request.getfixturevalue(run)
    package = tmp_path / "model.zip"
    assert main(["export", str(run_dir), str(package)]) == 0
    source = source_image(cache)
    from_run = predicted(run_dir, source, tmp_path / "run.nii.gz")
    from_zip = predicted(package, source, tmp_path / "zip.nii.gz")
    np.testing.assert_array_equal(np.asarray(from_zip.dataobj), np.asarray(from_run.dataobj))
    np.testing.assert_array_equal(from_zip.affine, from_run.affine)
    assert np.isin(np.asarray(from_zip.dataobj), [0, *MMWHS.values()]).all()


def test_the_package_holds_what_prediction_needs_and_nothing_else(package, two_stage_run) -> None:
    with zipfile.ZipFile(package) as archive:
        names = sorted(archive.namelist())
        members = {name: archive.read(name) for name in names}
    assert names == sorted([MANIFEST, *MEMBERS])
    manifest = json.loads(members[MANIFEST])
    assert manifest["format"] == "duoseg-model-package" and manifest["format_version"] == 1
    for name in MEMBERS:
        assert manifest["members"][name]["sha256"] == hashlib.sha256(members[name]).hexdigest()
        assert manifest["members"][name]["bytes"] == len(members[name])
    chosen = model_checkpoint(two_stage_run)
    assert chosen is not None
    checkpoint = load_checkpoint(chosen, load_plugins())
    weights = read_package(package, load_plugins()).tensors
    assert set(weights) == {k for k in checkpoint.tensors if k.startswith("network.")}
    assert not any(k.startswith(("optimizer.", "rng.")) for k in weights)
    assert json.loads(members["config.json"]) == checkpoint.config
    assert json.loads(members["provenance.json"]) == checkpoint.meta["provenance"]
    method = json.loads(members["method.json"])
    assert method["component"] == "two_stage"
    assert method["option_defaults"]["threshold"] == 0.5
    classes = json.loads(members["classes.json"])
    assert [(c["name"], c["value"]) for c in classes] == [("background", 0), *MMWHS.items()]
    assert all(len(c["rgba"]) == 4 for c in classes)
    about = json.loads(members["about.json"])
    assert about["description"] == "tiny phantom model" and about["licence"] == "CC-BY-4.0"
    assert about["citation"] == "Wang et al., STACOM 2018"
    assert about["source"]["checkpoint"] == chosen.name


def test_evaluate_takes_the_classes_from_a_package(package) -> None:
    assert run_labels(package, load_plugins()) == MMWHS


# ------------------------------------------------------------------------ refusals


def rewritten(package: Path, target: Path, *, drop: tuple[str, ...] = (),
              change: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
              manifest: dict[str, object] | None = None, digests: bool = True) -> Path:  # fmt: skip
    """A copy of ``package`` with members dropped, changed or added; the manifest's
    digests recomputed when ``digests`` (so only what a test means to break is broken)."""
    with zipfile.ZipFile(package) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(members.pop(MANIFEST))
    members.update(change or {})
    for name in drop:
        members.pop(name)
    if digests:
        for name, data in members.items():
            record["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                       "bytes": len(data)}  # fmt: skip
    record.update(manifest or {})
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in {**members, **(add or {}), MANIFEST: json.dumps(record).encode()}.items():
            archive.writestr(name, data)
    return target


def refused(package: Path, cache: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "out.nii.gz"
    assert main(["predict", str(package), str(source_image(cache)), str(out)]) == EXIT_BAD_INPUT
    assert not out.exists()
    error = capsys.readouterr().err
    assert error.startswith("duoseg: error: ") and error.count("\n") == 1, error  # one line
    return error


def test_a_member_whose_digest_does_not_match_is_refused(package, cache, tmp_path,
                                                         capsys) -> None:  # fmt: skip
    config = zipfile.ZipFile(package).read("config.json")
    assert b'"seed": 2' in config
    change = {"config.json": config.replace(b'"seed": 2', b'"seed": 7')}  # same size
    bad = rewritten(package, tmp_path / "m.zip", change=change, digests=False)
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member config.json has SHA-256 " in error
    assert "but manifest.json records" in error and "damaged or was altered" in error


def test_a_missing_member_is_refused(package, cache, tmp_path, capsys) -> None:
    bad = rewritten(package, tmp_path / "m.zip", drop=("preprocessing.json",), digests=False)
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member preprocessing.json is missing (the manifest lists it)" in error


def test_a_member_missing_from_manifest_and_archive_is_refused(package, cache, tmp_path,
                                                               capsys) -> None:  # fmt: skip
    with zipfile.ZipFile(package) as archive:
        record = json.loads(archive.read(MANIFEST))
    del record["members"]["method.json"]
    bad = rewritten(package, tmp_path / "m.zip", drop=("method.json",), digests=False,
                    manifest={"members": record["members"]})  # fmt: skip
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member method.json is missing (the format requires it)" in error


@pytest.mark.parametrize(
    "lacking",
    [
        ({"network:net9": {"plugin": "x", "distribution": "acme-nets", "version": "1.2.0"}},
         "network 'net9' came from acme-nets 1.2.0, which is not installed here; "
         "install acme-nets 1.x"),
        ({"network:net1": {"plugin": "networks", "distribution": "duoseg", "version": "7.0"}},
         "(another distribution or major version); install duoseg 7.x"),
    ],
)  # fmt: skip
def test_a_plugin_or_version_this_machine_lacks_is_refused_naming_the_distribution(
    package, cache, tmp_path, capsys, lacking
) -> None:
    entry, message = lacking
    provenance = json.loads(zipfile.ZipFile(package).read("provenance.json"))
    provenance.update(entry)
    change = {"provenance.json": json.dumps(provenance).encode()}
    bad = rewritten(package, tmp_path / "m.zip", change=change)
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member provenance.json: " in error and message in error, error


def test_a_package_of_a_newer_format_is_refused(package, cache, tmp_path, capsys) -> None:
    bad = rewritten(package, tmp_path / "m.zip", manifest={"format_version": 2})
    error = refused(bad, cache, tmp_path, capsys)
    assert (
        f"{bad}: member manifest.json: format_version 2 was made by a newer duoseg; this one "
        "reads up to 1; upgrade duoseg"
    ) in error


@pytest.mark.parametrize("name", ["../escaped.json", "/tmp/absolute.json", "a/../../b.json",
                                  "..\\windows.json"])  # fmt: skip
def test_a_member_whose_path_escapes_the_package_is_refused(package, cache, tmp_path, capsys,
                                                            name) -> None:  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    bad = rewritten(package, work / "m.zip", add={name: b"{}"})
    error = refused(bad, cache, work, capsys)
    assert f"{bad}: member {name!r} names a path outside the package; refusing it" in error
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m.zip", "work"]  # nothing extracted


def test_a_pickled_or_unknown_member_is_refused_unread(package, cache, tmp_path, capsys) -> None:
    bad = rewritten(package, tmp_path / "m.zip", add={"weights.pkl": b"\x80\x04K\x01."})
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member 'weights.pkl' is not part of package format 1" in error


def test_a_member_size_other_than_the_manifests_is_refused_before_reading(
    package, cache, tmp_path, capsys
) -> None:
    with zipfile.ZipFile(package) as archive:
        record = json.loads(archive.read(MANIFEST))
    record["members"]["config.json"]["bytes"] = 12
    bad = rewritten(package, tmp_path / "m.zip", manifest={"members": record["members"]},
                    digests=False)  # fmt: skip
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member config.json is " in error and "but manifest.json records 12" in error


def test_a_member_compressed_otherwise_than_export_writes_is_refused(
    package, cache, tmp_path, capsys
) -> None:
    """bzip2 and LZMA members inflate without bound before their size is checked: only
    stored and deflated members are read."""
    bad = tmp_path / "m.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            kind = zipfile.ZIP_BZIP2 if name == "config.json" else zipfile.ZIP_DEFLATED
            target.writestr(name, source.read(name), compress_type=kind)
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: member config.json uses zip compression method 12" in error


def test_weights_that_do_not_fit_the_networks_are_refused_in_one_line(
    package, cache, tmp_path, capsys
) -> None:
    """A package whose config was edited (digests recomputed) passes every member check;
    its weights then do not fit the networks the config builds."""
    config = json.loads(zipfile.ZipFile(package).read("config.json"))
    config["networks"]["net2"]["params"]["base_width"] = 6
    bad = rewritten(package, tmp_path / "m.zip",
                    change={"config.json": json.dumps(config).encode()})  # fmt: skip
    error = refused(bad, cache, tmp_path, capsys)
    assert f"{bad}: networks.net2: weights do not fit Net2: " in error


def test_a_file_that_is_not_a_zip_is_refused(cache, tmp_path, capsys) -> None:
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip at all")
    assert f"{bad}: not a model package (a zip file)" in refused(bad, cache, tmp_path, capsys)


def test_export_refuses_an_existing_file_and_a_run_without_a_checkpoint(
    two_stage_run, tmp_path, capsys
) -> None:
    target = tmp_path / "model.zip"
    target.write_bytes(b"precious")
    assert main(["export", str(two_stage_run), str(target)]) == EXIT_BAD_INPUT
    assert f"{target}: package file exists; pass --overwrite" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), str(tmp_path / "x.zip")]) == EXIT_BAD_INPUT
    assert f"{empty}: no complete checkpoint" in capsys.readouterr().err
    assert main(["export", str(two_stage_run), str(target), "--overwrite"]) == 0
    assert zipfile.is_zipfile(target)
