"""``duoseg demo``: the quick preset end to end, and its refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from duoseg.apps.cli import main
from duoseg.apps.demo import PRESETS, finding, format_report


@pytest.mark.slow
def test_quick_demo_writes_the_report_with_every_method(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    header = (
        "| structure | Dice Net1 | Dice Net1+Net2 | Dice Baseline | Dice 2 mm ceiling | "
        "Jaccard Net1 |"
    )
    assert header in report
    assert re.search(r"\| Myo \| \d\.\d{4} \| \d\.\d{4} \| \d\.\d{4} \| 0\.\d{4} \|", report)
    assert "Every model trained for 20 s of wall-clock (`train.seconds`)" in report
    assert "not assessed: the quick preset is a smoke run" in report
    assert "## Net1's tile (no box given)" in report
    assert re.search(r"\| ct_train_1005 \| [\d.]+ \| [\d.]+ \| [\d.]+ \(\w+\) \| Myo \d", report)
    for line in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (out / line).stat().st_size > 0, line
    for phase in (
        "phantoms + cache build",
        "train two_stage",
        "train baseline",
        "predict Net1",
        "evaluate, and the 2 mm ceiling",
    ):
        assert f"| {phase} |" in report
    for method in ("net1", "net1_net2", "baseline"):
        assert (out / "predictions" / method / "ct_train_1005_label.nii.gz").exists()
    assert sorted(p.name for p in (out / "models").iterdir()) == ["baseline.zip", "two_stage.zip"]


def test_a_non_empty_output_folder_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: demo output folder must be absent or empty" in err
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--device", "cuda", "--out", str(tmp_path / "d")]) == 2
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def _result(dice: dict[str, float]) -> dict:
    table = {m: {s: {"mean": dice.get(s, 0.5), "sd": 0.0} for s in
                 ("LV", "Myo", "RV", "LA", "RA", "AA", "PA", "WH")}
             for m in ("dice", "jaccard", "asd", "hd95")}  # fmt: skip
    return {"cases": {"a": {}, "b": {}}, "table": table}


def test_the_finding_needs_both_mean_and_myocardium_better() -> None:
    better_mean_only = {"Net1": _result({}), "Net1+Net2": _result({"LV": 0.9, "Myo": 0.4}),
                        "Baseline": _result({"Myo": 0.45})}  # fmt: skip
    outcome = finding(better_mean_only)
    assert outcome["mean"][2] and not outcome["Myo"][2]
    bound = _result({})
    report = format_report(PRESETS["cpu"], "cpu", results=better_mean_only,
                           timings={"phantoms": 1.0}, figures={}, bound=bound,
                           tiles=[])  # fmt: skip
    assert "**not reproduced**: Net1+Net2 mean Dice" in report
    assert "myocardium 0.4000 vs 0.4500" in report


def test_the_report_states_its_sd_and_hd95_conventions() -> None:
    results = {name: _result({}) for name in ("Net1", "Net1+Net2", "Baseline")}
    report = format_report(PRESETS["cpu"], "cpu", results=results, timings={"phantoms": 1.0},
                           figures={}, bound=_result({}), tiles=[])  # fmt: skip
    assert "± is the population standard deviation over the test cases (ddof 0)" in report
    assert "HD95 is MONAI's (`compute_hausdorff_distance(percentile=95)`)" in report


def test_the_report_gives_each_test_cases_tile_and_its_least_recall() -> None:
    results = {name: _result({}) for name in ("Net1", "Net1+Net2", "Baseline")}
    tiles = [{"case": "ct_train_1008", "fraction": 0.2534, "labels_box": 0.2012,
              "recall": {"Myo": 1.0, "PA": 0.99712, "AA": 0.9999}}]  # fmt: skip
    report = format_report(PRESETS["cpu"], "cpu", results=results, timings={"phantoms": 1.0},
                           figures={}, bound=_result({}), tiles=tiles)  # fmt: skip
    assert "| ct_train_1008 | 25.3 | 20.1 | 99.71 (PA) | Myo 100.00, PA 99.71, AA 99.99 |" in report
