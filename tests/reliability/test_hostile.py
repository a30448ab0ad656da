"""Hostile files, paths and component names: refused before they can run code or
leave the output folder."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
from duoseg.core.errors import DataError, PredictError, WeightsError
from duoseg.core.inference.outputs import NiftiSink, ZarrSink, prepare_output
from duoseg.core.records.case import CaseMeta, LevelMeta

from .conftest import run

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "custom_plugin" / "config.toml"


class Payload:
    """Unpickling this runs ``open(marker, "w")``: the side effect a test looks for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def _poisoned_run(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    marker = tmp_path / "payload-ran"
    for name in ("best.safetensors", "last.safetensors"):
        (run_dir / name).write_bytes(pickle.dumps(Payload(marker)))
    return run_dir, marker


@pytest.mark.slow
def test_a_pickled_checkpoint_is_refused_and_its_payload_never_runs(
    trained_run: Path, small_cache: Path, tmp_path: Path
) -> None:
    run_dir, marker = _poisoned_run(trained_run, tmp_path)
    predicted = run(["predict", str(run_dir), str(small_cache), str(tmp_path / "out.zarr")])
    assert predicted.returncode == 2
    assert f"{run_dir / 'best.safetensors'}" in predicted.stderr
    assert predicted.stderr.splitlines()[-1].startswith("duoseg: error: ")
    assert not marker.exists(), "the pickle payload ran"


def test_an_oversized_safetensors_header_is_refused(tmp_path: Path) -> None:
    from duoseg.core.training.weights import read_weights

    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(
        WeightsError, match=r"huge.safetensors: safetensors header length \d+ exceeds"
    ):
        read_weights(path)


def _meta(case_id: str) -> CaseMeta:
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    return CaseMeta(
        case_id=case_id, shape=(2, 3, 4), spacing=(1.0, 1.0, 1.0),
        levels={"coarse": LevelMeta(3.0, (1, 1, 1), (3.0, 3.0, 3.0))}, canonical_affine=eye,
        source_affine=eye, source_shape=(4, 3, 2), class_names=("background", "LV"),
        label_values=(0, 500), normalisation={}, checksums={}, has_label=False,
    )  # fmt: skip


@pytest.mark.parametrize("case_id", ["../escape", "/etc/passwd", "..", "a/../../b", ".hidden"])
@pytest.mark.parametrize("sink", [ZarrSink, NiftiSink])
def test_case_ids_that_leave_the_output_folder_are_refused(tmp_path, sink, case_id) -> None:
    out = tmp_path / ("out.zarr" if sink is ZarrSink else "out")
    prepare_output(out, overwrite=False)
    with pytest.raises(DataError, match=r"case id .* is not a safe name"):
        sink(out).begin(_meta(case_id), probabilities=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_linked_case_folder_in_a_zarr_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    prepare_output(out, overwrite=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "cases").mkdir()
    (out / "cases" / "ct_1").symlink_to(elsewhere)
    with pytest.raises(PredictError, match=r"is a symbolic link; refusing to write"):
        ZarrSink(out).begin(_meta("ct_1"), probabilities=False)
    assert not any(elsewhere.iterdir())


@pytest.mark.slow
def test_overwriting_a_prediction_never_writes_through_a_planted_link(
    trained_run: Path, small_cache: Path, tmp_path: Path
) -> None:
    image = small_cache.parent / "src" / "ct_train_1002_image.nii.gz"
    out = tmp_path / "out"
    assert run(["predict", str(trained_run), str(image), str(out)]).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = out / "ct_train_1002_label.nii.gz"
    planted.unlink()
    planted.symlink_to(victim)
    result = run(["predict", str(trained_run), str(image), str(out), "--overwrite"])
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious"
    assert not planted.is_symlink()


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
class Net: pass
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evil_module", "evil_module:Net", "evil_module.Net"])
def test_naming_a_module_in_a_config_never_imports_it(
    small_cache: Path, tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(EVIL.format(marker=str(marker)))
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE_CONFIG.read_text().replace('"resunet3d"', f'"{name}"'))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run(["train", str(config), "--cache", str(small_cache), "--out",
                  str(tmp_path / "run")], env=env)  # fmt: skip
    assert result.returncode == 2
    assert f"networks.unet3d.component = '{name}': unknown network" in result.stderr
    assert not marker.exists(), "a module named in a config was imported"


@pytest.fixture(scope="module")
def plugin_run(small_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained with the example plugin's resunet3d and tversky."""
    out = tmp_path_factory.mktemp("plugin-run") / "run"
    tiny = ["--set", "schedule.params.iterations=2",
            "--set", "schedule.params.subvolume_sizes=[16]",
            "--set", "data.validation_cases=[]"]  # fmt: skip
    result = run(["train", str(EXAMPLE_CONFIG), "--cache", str(small_cache), "--out", str(out),
                  *tiny])  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_disable_plugin_autoload_is_honoured_by_every_command(
    plugin_run: Path, small_cache: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "DUOSEG_DISABLE_PLUGIN_AUTOLOAD": "1"}
    listed = run(["plugins"], env=env)
    assert listed.returncode == 0 and "resunet3d" not in listed.stdout
    assert "net2" in listed.stdout
    trained = run(["train", str(EXAMPLE_CONFIG), "--cache", str(small_cache), "--out",
                   str(tmp_path / "run")], env=env)  # fmt: skip
    assert trained.returncode == 2 and "unknown network 'resunet3d'" in trained.stderr
    predicted = run(["predict", str(plugin_run), str(small_cache), str(tmp_path / "p.zarr")],
                    env=env)  # fmt: skip
    assert predicted.returncode == 2
    assert "duoseg-example-plugin" in predicted.stderr, predicted.stderr
