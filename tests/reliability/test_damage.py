"""A deleted and a truncated chunk in a finished cache and in a finished prediction:
every read and ``verify`` names the case and the chunk; nothing reads as zeros."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from duoseg.apps.cli import main
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import DataError
from duoseg.core.inference.outputs import PredictionReader

from .conftest import run

DAMAGE = ["deleted", "truncated"]


def _damage(chunk: Path, how: str) -> None:
    if how == "deleted":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 3])


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_cache_chunk_is_named_by_reads_and_verify(
    small_cache: Path, tmp_path: Path, capsys, how: str
) -> None:
    cache = shutil.copytree(small_cache, tmp_path / "cache.zarr")
    _damage(cache / "cases" / "ct_train_1003" / "label" / "c" / "1" / "0" / "1", how)
    reader = open_cache(cache, load_plugins())
    state = "missing" if how == "deleted" else "truncated"
    message = rf"case ct_train_1003, array label: chunk \(1, 0, 1\) is {state}"
    with pytest.raises(DataError, match=message):
        reader.case("ct_train_1003").label[...]
    with pytest.raises(DataError, match=message):
        reader.case("ct_train_1003").label[8:16, 0:32, 32:64]  # exactly the damaged chunk
    assert main(["cache", "verify", str(cache)]) == 1
    assert "ct_train_1003" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_prediction_chunk_is_named_by_reads_and_verify(
    trained_run: Path, small_cache: Path, tmp_path: Path, capsys, how: str
) -> None:
    out = tmp_path / "pred.zarr"
    result = run(["predict", str(trained_run), str(small_cache), str(out), "--probabilities"])
    assert result.returncode == 0, result.stderr
    _damage(out / "cases" / "ct_train_1002" / "labels" / "c" / "7" / "0" / "0", how)
    reader = PredictionReader(out)
    expected = rf"prediction {out}, case ct_train_1002, array labels: chunk \(7, 0, 0\) is"
    with pytest.raises(DataError, match=expected):
        reader.array("ct_train_1002")[...]
    with pytest.raises(DataError, match=expected):
        reader.array("ct_train_1002")[7]
    reader.array("ct_train_1002")[8:]  # the other chunks still read
    assert reader.array("ct_train_1002", "probabilities")[...].shape[0] == 8
    assert main(["cache", "verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "case ct_train_1002, array labels: chunk (7, 0, 0)" in printed
    assert f"{out}: 5 cases, 1 problem(s)" in printed
