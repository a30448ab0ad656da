"""``duoseg evaluate`` on any label set: classes from --labels, a run, the prediction's
record or the ground truth; never a fixed MM-WHS table. No training needed."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from duoseg.apps.cli import main
from duoseg.core import load_plugins
from duoseg.core.errors import PredictError
from duoseg.core.inference.evaluate import evaluate
from duoseg.core.inference.outputs import NiftiSink, finish_output
from duoseg.core.inference.score_files import format_table
from duoseg.core.interfaces.store import COMPLETION_FILE
from duoseg.core.records.case import CaseMeta, LevelMeta
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.training.checkpoint import TrainState, save_checkpoint

BRAIN = {"csf": 1, "gm": 2, "wm": 3}  # a 4-class MR set: labels 0 to 3
AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])


def _volume(shift: int = 0) -> np.ndarray:
    labels = np.zeros((24, 20, 16), np.int16)
    labels[4 + shift : 20 + shift, 4:16, 3:13] = 3  # wm
    labels[6 + shift : 18 + shift, 6:14, 5:11] = 2  # gm
    labels[9 + shift : 15 + shift, 8:12, 6:10] = 1  # csf
    return labels


def _save(path: Path, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), path)
    return path


@pytest.fixture
def brain(tmp_path: Path) -> tuple[Path, Path]:
    """A prediction folder (two cases, one voxel row off) and its ground truth."""
    for case, shift in (("mr_1", 1), ("mr_2", 0)):
        _save(tmp_path / "gt" / f"{case}_label.nii.gz", _volume())
        _save(tmp_path / "pred" / f"{case}_label.nii.gz", _volume(shift))
    return tmp_path / "pred", tmp_path / "gt"


def test_classes_come_from_the_predictions_completion_record(brain) -> None:
    pred, gt = brain
    finish_output(pred, ["mr_1", "mr_2"], [], BRAIN)
    assert json.loads((pred / COMPLETION_FILE).read_text())["labels"] == BRAIN
    result = evaluate(pred, gt, load_plugins())
    assert result["labels"] == BRAIN and result["label_source"] == str(pred / COMPLETION_FILE)
    assert format_table(result).splitlines()[0] == "| metric | csf | gm | wm | WH |"
    dice = result["table"]["dice"]
    assert all(0.5 < dice[s]["mean"] <= 1.0 for s in (*BRAIN, "WH")), dice
    assert result["cases"]["mr_2"]["gm"]["dice"] == 1.0  # identical case
    assert result["cases"]["mr_1"]["WH"]["dice"] == pytest.approx(1 - 1 / 16)  # one row off


def test_the_labels_option_names_the_classes(brain, tmp_path, capsys) -> None:
    pred, gt = brain
    args = ["evaluate", str(pred), str(gt), "--labels", "csf=1,gm=2,wm=3"]
    assert main([*args, "--csv", str(tmp_path / "e.csv"), "--json", str(tmp_path / "e.json"),
                 "--overlays", str(tmp_path / "png")]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "| metric | csf | gm | wm | WH |"
    assert "nan" not in captured.out and captured.err == ""
    assert json.loads((tmp_path / "e.json").read_text())["labels"] == BRAIN
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert {row.split(",")[1] for row in rows[1:]} == {"csf", "gm", "wm", "WH"}
    assert len(list((tmp_path / "png").glob("*_overlay.png"))) == 2


def test_labels_option_wins_and_a_subset_is_evaluated(brain) -> None:
    pred, gt = brain
    result = evaluate(pred, gt, load_plugins(), labels={"wm": 3})
    assert list(result["table"]["dice"]) == ["wm", "WH"]
    # WH is the union of the listed classes only: here the wm voxels.
    assert result["cases"]["mr_2"]["WH"]["dice"] == 1.0


def test_classes_come_from_a_runs_checkpoint(brain, tmp_path, capsys) -> None:
    pred, gt = brain
    run = tmp_path / "run"
    run.mkdir()
    record = Preprocessing(class_names=("background", *BRAIN), label_values=(0, *BRAIN.values()))
    data = record.as_dict()
    save_checkpoint(run / "last.safetensors", networks={}, optimizer=None, state=TrainState(),
                    config={}, provenance={}, data=data)  # fmt: skip
    assert main(["evaluate", str(pred), str(gt), "--run", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "| metric | csf | gm | wm | WH |"


def test_without_a_label_map_the_truths_values_are_used_and_said(brain, capsys) -> None:
    pred, gt = brain
    assert main(["evaluate", str(pred), str(gt)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "| metric | 1 | 2 | 3 | WH |"
    assert captured.err.strip() == (
        f"classes: the nonzero values found in {gt}, named by value "
        "(no --labels, --run or record in PRED)"
    )


def test_a_label_file_written_by_duoseg_records_its_classes(tmp_path) -> None:
    """A single prediction file (no folder record) carries its classes in a NIfTI extension."""
    eye = np.eye(4).tolist()
    meta = CaseMeta(
        case_id="mr_1", shape=(16, 20, 24), spacing=(1.0, 1.0, 1.0),
        levels={"coarse": LevelMeta(4.0, (4, 5, 6), (4.0, 4.0, 4.0))}, canonical_affine=eye,
        source_affine=eye,
        source_shape=(24, 20, 16), class_names=("background", *BRAIN),
        label_values=(0, *BRAIN.values()), normalisation={}, checksums={}, has_label=False,
    )  # fmt: skip
    target = tmp_path / "mr_1.nii"
    sink = NiftiSink(target, single_file=True)
    assert sink.begin(meta, probabilities=False) == 0
    canonical = np.transpose(_volume().astype(np.uint8), (2, 1, 0))  # z, y, x
    sink.write(0, canonical, None)
    sink.end(meta, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mr_1.nii"]  # no partial left
    truth = tmp_path / "gt" / "mr_1_label.nii.gz"
    truth.parent.mkdir()
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), truth)
    result = evaluate(target, truth, load_plugins())
    assert result["labels"] == BRAIN and result["label_source"] == str(target)
    assert result["table"]["dice"]["WH"]["mean"] == 1.0


# ----------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("csf=1,gm=x", "--labels item 'gm=x' is not NAME=VALUE with an integer VALUE"),
        ("csf=0,gm=2", "--labels: class 'csf' has label value 0; label values are positive "
                       "integers (0 is the background)"),
        ("csf=1,gm=1", "--labels: classes 'csf' and 'gm' share label value 1"),
        ("WH=1", "--labels: class name 'WH' is reserved for the whole foreground"),
        ("=1", "--labels: class name '' is not a non-empty name"),
    ],
)  # fmt: skip
def test_bad_label_maps(brain, capsys, labels: str, message: str) -> None:
    pred, gt = brain
    assert main(["evaluate", str(pred), str(gt), "--labels", labels]) == 2
    assert message in capsys.readouterr().err


def test_a_table_where_no_class_matched_is_an_error(brain, capsys) -> None:
    """The MM-WHS values on a brain set: every cell would be nan."""
    pred, gt = brain
    assert main(["evaluate", str(pred), str(gt), "--labels", "LV=500,Myo=205"]) == 2
    assert (
        f"duoseg: error: {pred} vs {gt}: field labels: none of the label values looked for "
        "{'LV': 500, 'Myo': 205} (from --labels) occurs in any case; values found: [0, 1, 2, 3]"
    ) in capsys.readouterr().err


def test_a_record_whose_labels_are_malformed(brain) -> None:
    pred, gt = brain
    finish_output(pred, ["mr_1", "mr_2"], [], {"csf": "one"})  # type: ignore[dict-item]
    message = rf"{COMPLETION_FILE}: field labels: class 'csf' has label value 'one'; label "
    with pytest.raises(PredictError, match=message + "values are positive integers"):
        evaluate(pred, gt, load_plugins())
    (pred / COMPLETION_FILE).write_text("{not json")
    with pytest.raises(PredictError, match=rf"{COMPLETION_FILE}: not a readable completion record"):
        evaluate(pred, gt, load_plugins())


def test_a_run_without_a_checkpoint_gives_no_labels(brain, tmp_path, capsys) -> None:
    pred, gt = brain
    assert main(["evaluate", str(pred), str(gt), "--run", str(tmp_path)]) == 2
    assert (
        f"{tmp_path}: --run has no complete checkpoint (best.safetensors or last.safetensors)"
        in capsys.readouterr().err
    )


def test_non_integer_label_values_are_refused_naming_file_and_value(brain, capsys) -> None:
    """Truncation would make 2.9999 (gm, resampled in floating point) into 2 - or 499.9999
    into background - silently; cache build refuses such labels too."""
    pred, gt = brain
    labels = _volume().astype(np.float32)
    labels[labels == 3] = 2.9999
    truth = _save(gt / "mr_1_label.nii.gz", labels)
    assert main(["evaluate", str(pred), str(gt), "--labels", "csf=1,gm=2,wm=3"]) == 2
    err = capsys.readouterr().err
    assert f"{truth}: field data: non-integer label values [2.999" in err, err


def test_a_background_only_truth_without_a_label_map(tmp_path, capsys) -> None:
    empty = np.zeros((8, 8, 8), np.int16)
    pred = _save(tmp_path / "p" / "a_label.nii.gz", empty)
    gt = _save(tmp_path / "g" / "a_label.nii.gz", empty)
    assert main(["evaluate", str(pred), str(gt)]) == 2
    assert (
        f"{gt}: the ground truth holds only label value 0 and no label map was given"
        in capsys.readouterr().err
    )


def test_the_ceiling_of_a_coarser_grid_loses_thin_detail(brain, capsys) -> None:
    """GT alone with --ceiling: the label map to 4 mm and back scores below 1, lowest on
    the thinnest class; to a grid finer than the data's and back it loses (almost) nothing."""
    _, gt = brain
    assert main(["evaluate", str(gt), "--ceiling", "4", "--labels", "csf=1,gm=2,wm=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ceiling of the 4 mm path ({gt} to 4 mm and back):")
    from duoseg.core.inference.evaluate import ceiling

    coarse = ceiling(gt, load_plugins(), 4.0, labels=BRAIN)
    dice = {c: coarse["table"]["dice"][c]["mean"] for c in BRAIN}
    assert all(0.3 < d < 1.0 for d in dice.values()) and min(dice, key=dice.get) == "gm", dice
    assert ceiling(gt, load_plugins(), 0.5, labels=BRAIN)["table"]["dice"]["csf"]["mean"] > 0.9


def test_the_ceiling_beside_a_prediction_and_in_parallel(brain, tmp_path, capsys) -> None:
    pred, gt = brain
    json_path = tmp_path / "result.json"
    args = ["evaluate", str(pred), str(gt), "--ceiling", "2", "--workers", "2",
            "--labels", "csf=1,gm=2,wm=3", "--json"]  # fmt: skip
    assert main([*args, str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "ceiling of the 2 mm path" in out and out.count("| Dice |") == 2
    result = json.loads(json_path.read_text())
    assert result["ceiling"]["ceiling_mm"] == 2.0
    serial = evaluate(pred, gt, load_plugins(), labels=BRAIN)
    assert result["cases"] == json.loads(json.dumps(serial["cases"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ceiling", "0"], "--ceiling: the grid must be a positive spacing in mm, got 0.0"),
        ([], "evaluate takes PRED GT, or GT alone with --ceiling MM; got "),
        (["extra", "--ceiling", "2"], "evaluate takes PRED GT, or GT alone with --ceiling MM"),
        (["--workers", "0", "--ceiling", "2"], "--workers must be >= 1, got 0"),
    ],
)
def test_bad_ceiling_arguments(brain, capsys, args, message) -> None:
    _, gt = brain
    paths = [str(gt)] if args[:1] != ["extra"] else [str(gt), str(gt), "extra"]
    rest = args[1:] if args[:1] == ["extra"] else args
    assert main(["evaluate", *paths, *rest]) == 2
    assert message in capsys.readouterr().err


def test_scores_inside_the_foregrounds_box_equal_the_whole_volumes() -> None:
    """Scoring is cropped to both foregrounds' box plus a voxel; every metric holds."""
    from duoseg.core.inference.evaluate import METRICS, _built_metrics, _metrics

    predicted, target = np.zeros((2, 60, 50, 40), np.int32)
    predicted[5:20, 10:30, 8:20] = 3  # a foreground voxel on the volume's edge, too
    predicted[0, 0, 0] = 1
    target[8:22, 12:31, 9:22] = 3
    target[10:14, 14:20, 10:15] = 2
    metrics = _built_metrics(load_plugins())
    spacing = (1.5, 1.0, 2.0)
    scores, found = _metrics(predicted, target, spacing, metrics, BRAIN)
    assert found
    for name, value in BRAIN.items():
        for metric in METRICS:
            whole = metrics[metric](predicted == value, target == value, spacing)
            assert scores[name][metric] == pytest.approx(whole, nan_ok=True), (name, metric)
    empty, found = _metrics(np.zeros_like(target), np.zeros_like(target), spacing, metrics, BRAIN)
    assert not found and np.isnan(empty["csf"]["dice"])
