"""Prediction under torchrun: cases sharded over gloo CPU ranks, one OUTPUT, one record."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from duoseg.core import load_plugins
from duoseg.core.distributed import Ranks
from duoseg.core.errors import DuosegError, PredictError
from duoseg.core.inference import predict, sharding
from duoseg.core.inference.outputs import PredictionReader, is_complete, prepare_output
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.streaming import Options, Report
from duoseg.core.interfaces.store import COMPLETION_FILE

from tests.conftest import FIXTURE_PLUGINS

WORKER = FIXTURE_PLUGINS.parent / "distributed" / "predict_worker.py"
BUDGET = 2.0  # MiB: several slabs per case, so a killed rank dies part-way through one


def launch(
    ranks: int, run: Path, source: Path, out: Path, logs: Path, *extra: str,
    kill_rank: int = -1, done: int = 0,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    logs.mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
        "--master_port", str(29700 + os.getpid() % 1000 + ranks + 7 * (kill_rank + 1)),
        str(WORKER), str(logs), str(kill_rank), str(done), "--",
        "predict", str(run), str(source), str(out), "--memory-budget", str(BUDGET), *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def one_process(run: Path, source: Path, out: Path, cases: list[str] | None = None) -> None:
    predict_paths(run, source, out, options=Options(memory_budget_mib=BUDGET), device="cpu",
                  cases=cases, overwrite=False, registry=load_plugins())  # fmt: skip


def record(out: Path) -> dict[str, Any]:
    """The completion record without the timings, which differ from run to run."""
    found = json.loads((out / COMPLETION_FILE).read_text())
    for report in found["reports"]:
        report.pop("seconds")
        report["details"] = {k: v for k, v in report["details"].items() if "seconds" not in k}
    return dict(found)


def logged(logs: Path, rank: int) -> list[str]:
    path = logs / f"predicted-rank{rank}.txt"
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_three_ranks_write_what_one_process_writes(two_stage_run, cache, tmp_path) -> None:
    cases = ["ct_train_1001", "ct_train_1002"]  # rank 2 has none and still takes part
    one_process(two_stage_run, cache, tmp_path / "one.zarr", cases)
    picks = [arg for case in cases for arg in ("--case", case)]
    logs = tmp_path / "logs"
    result = launch(3, two_stage_run, cache, tmp_path / "three.zarr", logs, *picks)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [logged(logs, r) for r in range(3)] == [[cases[0]], [cases[1]], []]
    assert record(tmp_path / "three.zarr") == record(tmp_path / "one.zarr")
    assert not (tmp_path / "three.zarr" / sharding.REPORTS).exists()
    one, three = PredictionReader(tmp_path / "one.zarr"), PredictionReader(tmp_path / "three.zarr")
    for case in cases:
        np.testing.assert_array_equal(three.array(case)[...], one.array(case)[...])
    again = launch(3, two_stage_run, cache, tmp_path / "three.zarr", logs, *picks)
    assert again.returncode != 0  # rank 0's refusal reaches every rank: none waits for it
    assert again.stderr.count("output exists and is complete; pass --overwrite") == 3


@pytest.mark.slow
def test_a_killed_rank_leaves_no_record_and_a_rerun_predicts_only_the_rest(
    two_stage_run, cache, tmp_path
) -> None:
    source = Path(cache).parent / "src"
    cases = sorted(p.name.removesuffix("_image.nii.gz") for p in source.glob("*_image.nii.gz"))
    assert len(cases) == 4  # rank 0: cases 0 and 2, rank 1: 1 and 3
    one_process(two_stage_run, source, tmp_path / "one")
    out, logs = tmp_path / "two", tmp_path / "logs"
    killed = launch(2, two_stage_run, source, out, logs, kill_rank=1, done=3)
    assert killed.returncode != 0
    assert logged(logs, 1) == [cases[1], cases[3]]
    assert not is_complete(out)
    assert sorted(p.name for p in out.glob("*_label.nii.gz")) == [
        f"{c}_label.nii.gz" for c in cases[:3]
    ]  # the killed case is only its hidden scratch file, and has no saved report
    assert list(out.glob(f".{cases[3]}_label.nii.gz.labels.partial"))
    assert sharding.saved_report(out, cases[3]) is None

    rerun_logs = tmp_path / "rerun-logs"
    rerun = launch(2, two_stage_run, source, out, rerun_logs)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [logged(rerun_logs, r) for r in (0, 1)] == [[], [cases[3]]]
    assert record(out) == record(tmp_path / "one")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    for case in cases:
        expected = nib.load(tmp_path / "one" / f"{case}_label.nii.gz")
        written = nib.load(out / f"{case}_label.nii.gz")
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(expected.dataobj))
        np.testing.assert_array_equal(written.affine, expected.affine)


def test_a_resumed_run_reuses_the_saved_reports_without_reading_the_cases(
    two_stage_run, cache, tmp_path, monkeypatch
) -> None:
    out, cases = tmp_path / "out.zarr", ["ct_train_1001", "ct_train_1003"]
    _interrupted(two_stage_run, cache, out, cases, monkeypatch)
    assert not is_complete(out)
    saved = [sharding.saved_report(out, c) for c in cases]
    inputs = predict._inputs

    def unreadable(*args: Any, **kwargs: Any) -> list[predict.Input]:
        return [dataclasses.replace(i, load=_never_read) for i in inputs(*args, **kwargs)]

    monkeypatch.setattr(predict, "_inputs", unreadable)  # a case read again fails here
    one_process(two_stage_run, cache, out, cases)
    reports = json.loads((out / COMPLETION_FILE).read_text())["reports"]
    assert [sharding.saved_report(out, c) for c in cases] == [None, None]
    assert [r["seconds"] for r in reports] == [s.seconds for s in saved if s is not None]


def test_a_file_output_under_several_ranks_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(PredictError, match=r"one\.nii\.gz: .* 2 ranks .* folder or \*\.zarr"):
        one_process(tmp_path / "run", tmp_path / "in.nii.gz", tmp_path / "one.nii.gz")


def test_a_case_given_twice_is_refused(two_stage_run, cache, tmp_path) -> None:
    with pytest.raises(PredictError, match=r"\['ct_train_1001'\] given more than once"):
        one_process(two_stage_run, cache, tmp_path / "out.zarr", ["ct_train_1001"] * 2)


def test_cases_go_round_robin_and_each_rank_takes_its_own_gpu(monkeypatch) -> None:
    cases = ["a", "b", "c", "d", "e"]
    assert [sharding.shard(cases, Ranks(r, 2)) for r in (0, 1)] == [["a", "c", "e"], ["b", "d"]]
    assert sharding.shard(cases[:1], Ranks(1, 2)) == []
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of the second node
    ranks = Ranks.from_environment()
    assert (ranks.device("cuda"), ranks.device("cuda:0"), ranks.device("cpu")) == (
        "cuda:1",
        "cuda:0",
        "cpu",
    )
    assert Ranks().device("cuda") == "cuda"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DuosegError, match="RANK=4, WORLD_SIZE=4"):
        Ranks.from_environment()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DuosegError, match="RANK='x' is not an integer"):
        Ranks.from_environment()


def test_a_linked_reports_folder_is_refused(tmp_path) -> None:
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / sharding.REPORTS).symlink_to(elsewhere)
    report = Report("ct_1", ((0, 1), (0, 1), (0, 1)), 1)
    with pytest.raises(PredictError, match=r"is a symbolic link; refusing to write"):
        sharding.save_report(out, report)
    assert not any(elsewhere.iterdir())


def _never_read() -> Any:
    raise AssertionError("a case with a saved report was read again")


def _interrupted(run: Path, source: Path, out: Path, cases: list[str], monkeypatch) -> None:
    """Predict ``cases`` into ``out`` and die before the completion record."""

    def killed_before_the_record(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(predict, "finish_output", killed_before_the_record)
        with pytest.raises(KeyboardInterrupt):
            one_process(run, source, out, cases)


def test_a_saved_report_without_its_output_is_predicted_again(
    two_stage_run, cache, tmp_path, monkeypatch
) -> None:
    out, cases = tmp_path / "out", ["ct_train_1001", "ct_train_1003"]
    _interrupted(two_stage_run, cache, out, cases, monkeypatch)
    (out / f"{cases[0]}_label.nii.gz").unlink()  # removed by hand; its report remains
    predicted: list[str] = []
    predict_paths(two_stage_run, cache, out, options=Options(memory_budget_mib=BUDGET),
                  device="cpu", cases=cases, overwrite=False, registry=load_plugins(),
                  on_case=lambda report: predicted.append(report.case_id))  # fmt: skip
    assert predicted == [cases[0]]
    assert (out / f"{cases[0]}_label.nii.gz").is_file() and is_complete(out)


def test_an_unfinished_output_of_another_run_is_refused_unless_overwrite(tmp_path) -> None:
    out = tmp_path / "out"
    first = {"format": "nifti", "checkpoint_sha256": "aa", "lcc": False}
    prepare_output(out, overwrite=False, run=first)
    (out / "ct_1_label.nii.gz").write_bytes(b"x")
    prepare_output(out, overwrite=False, run=first)  # the same run resumes
    assert (out / "ct_1_label.nii.gz").exists()
    other = {**first, "checkpoint_sha256": "bb", "lcc": True}
    with pytest.raises(PredictError, match=r"out: an unfinished prediction by another run "
                       r"\(checkpoint_sha256: 'aa' there, 'bb' now; lcc: False there, True "
                       r"now\); rerun that one to finish it, or pass --overwrite"):  # fmt: skip
        prepare_output(out, overwrite=False, run=other)
    prepare_output(out, overwrite=True, run=other)
    assert [p.name for p in out.iterdir()] == ["duoseg-prediction.json"]
    prepare_output(out, overwrite=False, run=other)  # now it is that run's
    (out / "x").write_text("")
    (out / "duoseg-prediction.json").write_text("{damaged")
    with pytest.raises(PredictError, match=r"duoseg-prediction\.json: not a readable prediction"):
        prepare_output(out, overwrite=False, run=other)


def test_an_unknown_cache_case_is_refused_before_output_is_made(
    two_stage_run, cache, tmp_path
) -> None:
    with pytest.raises(DuosegError, match=r"no case \['nope'\]; its cases: \['ct_train_1001'"):
        one_process(two_stage_run, cache, tmp_path / "out.zarr", ["ct_train_1001", "nope"])
    assert not (tmp_path / "out.zarr").exists()


def test_ranks_that_found_other_cases_are_refused(tmp_path, monkeypatch) -> None:
    def gathered(everyone: list[Any], ours: Any) -> None:
        everyone[:] = [ours, (1, "0123456789ab")]

    monkeypatch.setattr(sharding.dist, "all_gather_object", gathered)
    with pytest.raises(PredictError, match=r"out: the ranks found different cases in INPUT "
                       r"\(rank 0: 2 cases, digest \w{12}, rank 1: 1 cases, digest "
                       r"0123456789ab\); every rank must see the same INPUT"):  # fmt: skip
        sharding.check_same_cases(Ranks(0, 2), ["a", "b"], tmp_path / "out")
    sharding.check_same_cases(Ranks(0, 1), ["a", "b"], tmp_path / "out")  # alone: nothing to ask


def test_a_case_no_rank_reported_is_named(two_stage_run, cache, tmp_path, monkeypatch) -> None:
    cases = ["ct_train_1001", "ct_train_1003"]
    monkeypatch.setattr(predict, "gather_reports", lambda ranks, reports: reports[:1])
    with pytest.raises(PredictError, match=r"no rank reported case\(s\) \['ct_train_1003'\]"):
        one_process(two_stage_run, cache, tmp_path / "out.zarr", cases)
