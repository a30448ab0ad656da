"""Streaming inference: exactness against a per-slice loop, the ROI, outputs, bad inputs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from duoseg.apps.cli import main
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.data.grid import class_fractions, downsample_label, upsample_box
from duoseg.core.errors import PredictError
from duoseg.core.inference.model import load_model
from duoseg.core.inference.outputs import ZarrSink, is_complete, prepare_output
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, most_probable, predict_case
from duoseg.core.interfaces.sampler import IMAGE_PAD, read_padded
from duoseg.plugins.methods import resampled
from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile


@pytest.mark.parametrize("channels", [1, 8])
@pytest.mark.parametrize("plane", [(25, 16), (45, 70)])  # a small box, most of the plane
def test_upsampled_boxes_equal_the_full_upsampling_and_fill_outside(channels: int, plane) -> None:
    coarse = torch.rand(channels, 7, 9, 11)
    shape = (40, 50, 60)
    full = F.interpolate(coarse[None], size=shape, mode="trilinear", align_corners=False)[0]
    fill = [float(c) + 0.5 for c in range(channels)]
    box = upsample_box(coarse, shape, (-2, 5, 70 - plane[1]), (15, *plane), fill)
    inside = full[:, 0:13, 5 : 5 + plane[0], 70 - plane[1] :]
    torch.testing.assert_close(box[:, 2:, :, : plane[1] - 10], inside, atol=1e-5, rtol=0)
    for c in range(channels):  # slices before the volume, columns past it: the fill
        assert torch.all(box[c, :2] == fill[c]) and torch.all(box[c, :, :, -10:] == fill[c])


@pytest.mark.parametrize("plane", [(6, 9), (40, 48)])
def test_upsampled_boxes_inside_the_volume_equal_the_full_upsampling(plane) -> None:
    coarse = torch.rand(3, 7, 9, 11)
    shape = (40, 50, 60)
    full = F.interpolate(coarse[None], size=shape, mode="trilinear", align_corners=False)[0]
    box = upsample_box(coarse, shape, (3, 1, 7), (20, *plane), [1.0, 0.0, 0.0])
    expected = full[:, 3:23, 1 : 1 + plane[0], 7 : 7 + plane[1]]
    torch.testing.assert_close(box, expected, atol=1e-5, rtol=0)


def test_class_fractions_are_the_area_averaged_one_hot() -> None:
    torch.manual_seed(0)
    label = torch.randint(0, 4, (2, 13, 10, 9), dtype=torch.uint8)
    shares = class_fractions(label, (5, 4, 3), 4)
    onehot = F.one_hot(label.long(), 4).movedim(-1, 1).float()
    torch.testing.assert_close(shares, F.adaptive_avg_pool3d(onehot, (5, 4, 3)))
    torch.testing.assert_close(shares.sum(1), torch.ones(2, 5, 4, 3))


def test_the_coarse_label_is_the_majority_the_first_class_winning_ties() -> None:
    label = np.zeros((2, 2, 4), np.uint8)
    label[..., 0:2] = [[[2, 1]]]  # a tie between 1 and 2 in the first coarse voxel
    label[..., 2:4] = [[[3, 3]]]  # class 3 alone in the second
    assert downsample_label(label, (1, 1, 2), 4).tolist() == [[[1, 3]]]


@pytest.mark.parametrize("layout", ["classes first", "channels last"])
def test_most_probable_is_the_argmax_with_the_first_class_winning_ties(layout) -> None:
    torch.manual_seed(0)
    scores = torch.rand(1, 5, 4, 6, 7).round(decimals=1)  # many ties
    if layout == "channels last":
        scores = scores.contiguous(memory_format=torch.channels_last_3d)
    labels = most_probable(scores[0])
    assert labels.dtype == torch.uint8
    assert torch.equal(labels, scores[0].argmax(0).to(torch.uint8))
    tied = torch.zeros(3, 2, 2, 2)
    assert torch.equal(most_probable(tied), torch.zeros(2, 2, 2, dtype=torch.uint8))


class RecordingSink(MemorySink):
    """Records where and on which thread each slab is written; fails at ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.writes = fail_at, []

    def write(self, z0, labels, scores) -> None:
        if z0 == self.fail_at:
            raise OSError(f"disk full writing slice {z0}")
        self.writes.append((z0, threading.current_thread().name))
        super().write(z0, labels, scores)


def test_slabs_are_written_in_order_by_the_writer_thread_and_a_failed_write_stops(
    two_stage_run, cache
) -> None:
    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    options = Options(memory_budget_mib=2)
    sink = RecordingSink()
    report = predict_case(model, case, sink, options)
    starts = list(range(0, case.meta.shape[0], report.slab))
    assert len(starts) > 2 and [z0 for z0, _ in sink.writes] == starts
    assert all(thread.startswith("duoseg-writer") for _, thread in sink.writes)
    failing = RecordingSink(fail_at=starts[1])
    with pytest.raises(OSError, match=f"disk full writing slice {starts[1]}"):
        predict_case(model, case, failing, options)
    assert [z0 for z0, _ in failing.writes] == starts[:1]


@pytest.mark.parametrize("run", ["two_stage_run", "guided_run"])
def test_streaming_equals_a_per_slice_k_slab_loop(run, cache, request) -> None:
    registry = load_plugins()
    model = load_model(request.getfixturevalue(run), registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    sink = MemorySink()
    options = Options(memory_budget_mib=2, probabilities=True)
    report = predict_case(model, case, sink, options)
    assert 1 <= report.slab < case.meta.shape[0]  # several slabs

    # The straightforward way: every slice on its own, K slices around it.
    net1, net2 = model.networks["net1"], model.networks["net2"]
    k = net2.k
    with torch.no_grad():
        probabilities = net1(
            torch.as_tensor(case.coarse_image[...].astype(np.float32))[None, None]
        ).softmax(1)
        full = F.interpolate(probabilities, size=case.meta.shape, mode="trilinear")[0]
        guidance = full if net2.in_channels > 2 else 1 - full[:1]
        roi, _ = dynamic_tile(1 - probabilities[0, 0].numpy(), case.meta, TwoStageOptions())
        expected = np.zeros(case.meta.shape, np.uint8)
        scores = np.zeros((model.classes, *case.meta.shape), np.float32)
        for z in range(roi[0].start, roi[0].stop):
            origin = (z - k // 2, roi[1].start, roi[2].start)
            size = (k, roi[1].stop - roi[1].start, roi[2].stop - roi[2].start)
            image = torch.as_tensor(
                read_padded(case.image, origin, size, IMAGE_PAD), dtype=torch.float32
            )
            guides = torch.zeros((guidance.shape[0], *size))
            if guidance.shape[0] > 1:  # outside the volume: certainly background
                guides[0] = 1
            lo, hi = max(z - k // 2, 0), min(z + k // 2 + 1, case.meta.shape[0])
            guides[:, lo - origin[0] : hi - origin[0]] = guidance[:, lo:hi, roi[1], roi[2]]
            out = net2(torch.cat((image[None], guides))[None]).softmax(1)[0, :, 0]
            expected[z, roi[1], roi[2]] = out.argmax(0).numpy()
            scores[:, z, roi[1], roi[2]] = out.numpy()
    agreement = (sink.labels == expected).mean()
    assert agreement >= 0.9999
    inside = (slice(None), roi[0], roi[1], roi[2])
    np.testing.assert_allclose(
        sink.probabilities[inside].astype(np.float32), scores[inside], atol=1e-3
    )


def test_net1_only_labels_are_net1s_upsampled_argmax(two_stage_run, cache) -> None:
    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    sink = MemorySink()
    predict_case(model, case, sink, Options(method={"net1_only": True}, memory_budget_mib=1))
    with torch.no_grad():
        coarse = torch.as_tensor(case.coarse_image[...].astype(np.float32))[None, None]
        probabilities = model.networks["net1"](coarse).softmax(1)
        full = F.interpolate(probabilities, size=case.meta.shape, mode="trilinear")[0]
    assert (sink.labels == full.argmax(0).numpy()).mean() >= 0.9999


def test_a_method_option_of_another_method_is_refused(baseline_run, cache) -> None:
    registry = load_plugins()
    model = load_model(baseline_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    message = (
        "ct_train_1002: method option net1_only=True is not an option of method resampled "
        r"\(options: none\)"
    )
    with pytest.raises(PredictError, match=message):
        predict_case(model, case, MemorySink(), Options(method={"net1_only": True}))


def test_a_misspelt_method_option_names_the_closest(two_stage_run, cache) -> None:
    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    with pytest.raises(
        PredictError, match=r"method option treshold=0.3 .* did you mean 'threshold'"
    ):
        predict_case(model, case, MemorySink(), Options(method={"treshold": 0.3}))
    with pytest.raises(PredictError, match=r"threshold = 1.5 must lie in \(0, 1\)"):
        predict_case(model, case, MemorySink(), Options(method={"threshold": 1.5}))


def test_a_mistyped_method_option_writes_nothing_and_the_corrected_command_runs(
    two_stage_run, cache, tmp_path, capsys
) -> None:
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    out = tmp_path / "out"
    command = ["predict", str(two_stage_run), str(source), str(out), "--method-option"]
    assert main([*command, "margn_mm=5"]) == 2
    err = capsys.readouterr().err
    assert "--method-option: method option margn_mm=5 is not an option" in err
    assert "did you mean 'margin_mm'?" in err
    assert not out.exists()
    assert main([*command, "margin_mm=5"]) == 0
    assert is_complete(out)


def test_a_run_refused_on_its_first_case_leaves_no_output(two_stage_run, cache, tmp_path) -> None:
    """Refusals that depend on a case (a tile outside it) come after OUTPUT is made:
    OUTPUT goes again, so that the corrected command needs no --overwrite."""
    out, registry = tmp_path / "out.zarr", load_plugins()

    def predict(roi: list[list[int]]) -> None:
        predict_paths(two_stage_run, cache, out, device="cpu", cases=["ct_train_1002"],
                      options=Options(method={"roi": roi}), overwrite=False,
                      registry=registry)  # fmt: skip

    with pytest.raises(PredictError, match=r"roi = .*axis z \[0, 9999\) must satisfy"):
        predict([[0, 9999], [0, 8], [0, 8]])
    assert not out.exists()
    predict([[0, 4], [0, 32], [0, 32]])
    assert is_complete(out)


def test_the_report_gives_the_tiles_share_of_the_volume_and_each_structures_recall(
    two_stage_run, cache
) -> None:
    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    roi = [[2, 14], [4, 30], [0, 40]]
    options = Options(memory_budget_mib=1, method={"roi": roi})  # slabs: counted in parts
    report = predict_case(model, case, MemorySink(), options)
    box = tuple(slice(lo, hi) for lo, hi in roi)
    label = case.label[...]
    assert report.roi_fraction == pytest.approx(label[box].size / label.size)
    for c, name in enumerate(case.meta.class_names[1:], 1):
        expected = (label[box] == c).sum() / max((label == c).sum(), 1)
        assert report.roi_recall[name] == pytest.approx(expected), name
    whole = predict_case(model, case, MemorySink(), Options(method={"net1_only": True}))
    assert (whole.roi_fraction, whole.roi_recall) == (1.0, None)  # nothing can be cut


def test_an_empty_foreground_falls_back_to_the_whole_volume(two_stage_run, cache, caplog) -> None:
    case = open_cache(cache, load_plugins()).case("ct_train_1001")
    box, empty = dynamic_tile(np.zeros(case.meta.coarse.shape), case.meta, TwoStageOptions())
    assert empty and box == tuple(slice(0, n) for n in case.meta.shape)
    assert "found no foreground" in caplog.text


def test_the_roi_is_the_foreground_box_plus_the_margin(cache) -> None:
    meta = open_cache(cache, load_plugins()).case("ct_train_1001").meta
    foreground = np.zeros(meta.coarse.shape)
    foreground[2:4, 3:6, 4:7] = 1
    foreground[-1, -1, -1] = 1  # a stray voxel: outside the box by default (largest component)
    scale = np.asarray(meta.shape) / np.asarray(meta.coarse.shape)
    box, empty = dynamic_tile(
        foreground, meta, TwoStageOptions(margin_mm=0.0, largest_component=False)
    )
    assert not empty
    assert box[0] == slice(int(np.floor(2 * scale[0])), meta.shape[0])
    box, _ = dynamic_tile(foreground, meta, TwoStageOptions(margin_mm=0.0))
    assert box[0] == slice(int(np.floor(2 * scale[0])), int(np.ceil(4 * scale[0])))


def test_nifti_output_is_in_the_source_grid_with_mmwhs_values(
    two_stage_run, cache, tmp_path
) -> None:
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    assert main(["predict", str(two_stage_run), str(source), str(tmp_path / "out")]) == 0
    written = nib.load(tmp_path / "out" / "ct_train_1003_label.nii.gz")
    original = nib.load(source)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 205, 420, 500, 550, 600, 820, 850}
    assert is_complete(tmp_path / "out")


def test_an_interrupted_zarr_output_is_incomplete_and_a_rerun_finishes_identically(
    two_stage_run, cache, tmp_path, monkeypatch
) -> None:
    registry = load_plugins()

    def predict(target: Path) -> None:
        predict_paths(
            two_stage_run,
            cache,
            target,
            options=Options(memory_budget_mib=2),
            device="cpu",
            cases=["ct_train_1002"],
            overwrite=False,
            registry=registry,
        )

    predict(tmp_path / "reference.zarr")
    original = ZarrSink.write
    calls = {"n": 0}

    def crash(self, z, labels, probabilities):
        original(self, z, labels, probabilities)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ZarrSink, "write", crash)
    target = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        predict(target)
    assert not is_complete(target)
    monkeypatch.setattr(ZarrSink, "write", original)
    predict(target)
    import zarr

    a = zarr.open_group(str(tmp_path / "reference.zarr"))["cases/ct_train_1002/labels"][...]
    b = zarr.open_group(str(target))["cases/ct_train_1002/labels"][...]
    np.testing.assert_array_equal(a, b)


def test_the_baseline_predicts_at_2mm_and_resamples_back(baseline_run, cache) -> None:
    registry = load_plugins()
    model = load_model(baseline_run, registry)
    case = open_cache(cache, registry).case("ct_train_1001")
    sink = MemorySink()
    report = predict_case(model, case, sink, Options(memory_budget_mib=1))
    assert sink.labels.shape == case.meta.shape and report.slab >= 1
    assert set(np.unique(sink.labels)) <= set(range(8))


def test_evaluate_prints_the_papers_table(two_stage_run, cache, tmp_path, capsys) -> None:
    source = Path(cache).parent / "src"
    assert main(["predict", str(two_stage_run), str(source), str(tmp_path / "pred")]) == 0
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            str(tmp_path / "pred"),
            str(source),
            "--json",
            str(tmp_path / "e.json"),
            "--csv",
            str(tmp_path / "e.csv"),
            "--overlays",
            str(tmp_path / "png"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    # The model's classes, in class order, from the prediction's completion record.
    assert out.splitlines()[0] == "| metric | Myo | LA | LV | RA | RV | AA | PA | WH |"
    assert " ± " in out  # four cases: mean ± sd
    result = json.loads((tmp_path / "e.json").read_text())
    assert len(result["cases"]) == 4
    assert len(list((tmp_path / "png").glob("*_overlay.png"))) == 4


# ----------------------------------------------------------------- bad inputs


def test_a_run_without_a_checkpoint(tmp_path, capsys) -> None:
    assert main(["predict", str(tmp_path), str(tmp_path), str(tmp_path / "o")]) == 2
    assert (
        "no complete checkpoint (best.safetensors or last.safetensors)" in capsys.readouterr().err
    )


@pytest.mark.parametrize("shape", [(20, 20), (20, 20, 20, 2)])
def test_non_3d_inputs(two_stage_run, tmp_path, capsys, shape) -> None:
    path = tmp_path / "x_image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
    assert main(["predict", str(two_stage_run), str(path), str(tmp_path / "o")]) == 2
    assert (
        f"x_image.nii.gz: field dim: a 3-D volume is required, got shape {shape}"
        in capsys.readouterr().err
    )


def test_non_finite_inputs(two_stage_run, tmp_path, capsys) -> None:
    data = np.zeros((30, 30, 30), np.float32)
    data[1, 2, 3] = np.nan
    path = tmp_path / "x_image.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert main(["predict", str(two_stage_run), str(path), str(tmp_path / "o")]) == 2
    assert "x_image.nii.gz: field data: 1 NaN/Inf intensity values" in capsys.readouterr().err


def test_a_volume_too_small_for_net1(two_stage_run, tmp_path, capsys) -> None:
    path = tmp_path / "x_image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 5), np.float32), np.eye(4)), path)
    assert main(["predict", str(two_stage_run), str(path), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "x: spacing" in err and "Net1 needs at least 4 voxels per axis" in err


def test_an_existing_output_is_refused_unless_overwrite(tmp_path) -> None:
    out = tmp_path / "o"
    prepare_output(out, overwrite=False)
    (out / "duoseg-complete.json").write_text("{}")
    with pytest.raises(PredictError, match="output exists and is complete; pass --overwrite"):
        prepare_output(out, overwrite=False)
    prepare_output(out, overwrite=True)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "data.txt").write_text("x")
    with pytest.raises(PredictError, match="exists and is not a duoseg prediction"):
        prepare_output(other, overwrite=True)


def test_evaluate_refuses_grids_that_differ(tmp_path, capsys) -> None:
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4)), tmp_path / "a_label.nii.gz"
    )
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 12), np.int16), np.eye(4)), tmp_path / "b_label.nii.gz"
    )
    code = main(["evaluate", str(tmp_path / "a_label.nii.gz"), str(tmp_path / "b_label.nii.gz")])
    assert code == 2
    assert "grids differ: shape (10, 10, 10) vs (10, 10, 12)" in capsys.readouterr().err


def test_slab_bspline_resampling_equals_scipy_order_2() -> None:
    from duoseg.core.inference.resample import BSplineUpsampler, fine_coordinates
    from scipy import ndimage

    coarse = np.random.default_rng(0).random((3, 7, 9, 11)).astype(np.float32)
    shape = (20, 25, 30)
    upsampler = BSplineUpsampler(coarse, shape)
    slabs = np.concatenate([upsampler.slab(z, min(z + 6, 20)).numpy() for z in range(0, 20, 6)], 1)
    axes = [fine_coordinates(f, c) for f, c in zip(shape, coarse.shape[1:], strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    expected = np.stack([
        ndimage.map_coordinates(ndimage.spline_filter(c, order=2, mode="mirror"), grid, order=2,
                                prefilter=False, mode="mirror")
        for c in coarse
    ])  # fmt: skip
    np.testing.assert_allclose(slabs, expected, atol=1e-5)


def test_predict_and_evaluate_a_baseline_run(baseline_run, cache, tmp_path, capsys) -> None:
    source = Path(cache).parent / "src"
    image = source / "ct_train_1001_image.nii.gz"
    assert main(["predict", str(baseline_run), str(image), str(tmp_path / "pred")]) == 0
    written = nib.load(tmp_path / "pred" / "ct_train_1001_label.nii.gz")
    assert written.shape == nib.load(image).shape
    capsys.readouterr()
    truth = source / "ct_train_1001_label.nii.gz"
    pred = tmp_path / "pred" / "ct_train_1001_label.nii.gz"
    assert main(["evaluate", str(pred), str(truth)]) == 0
    assert "| Dice |" in capsys.readouterr().out


def test_zarr_output_with_lcc_equals_the_in_memory_result(two_stage_run, cache, tmp_path) -> None:
    from duoseg.core.inference.outputs import PredictionReader, finish_output

    registry = load_plugins()
    model = load_model(two_stage_run, registry)
    case = open_cache(cache, registry).case("ct_train_1002")
    options = Options(lcc_per_class=True, memory_budget_mib=2)
    memory = MemorySink()
    predict_case(model, case, memory, options)
    out = tmp_path / "out.zarr"
    prepare_output(out, overwrite=False)
    predict_case(model, case, ZarrSink(out), options)
    finish_output(out, ["ct_train_1002"], [])
    np.testing.assert_array_equal(PredictionReader(out).array("ct_train_1002")[...], memory.labels)


# ------------------------------------------------- a NIfTI file OUTPUT (issue 12, item 6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_nifti_file_output_is_that_file(two_stage_run, cache, tmp_path, capsys, suffix) -> None:
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    out = tmp_path / f"out{suffix}"
    assert main(["predict", str(two_stage_run), str(source), str(out)]) == 0
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    written, original = nib.load(out), nib.load(source)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 205, 420, 500, 550, 600, 820, 850}
    capsys.readouterr()  # the file records its classes: evaluate needs no label map
    truth = Path(cache).parent / "src" / "ct_train_1003_label.nii.gz"
    assert main(["evaluate", str(out), str(truth)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "| metric | Myo | LA | LV | RA | RV | AA | PA | WH |"
    assert captured.err == ""


def test_an_existing_file_output_is_refused_unless_overwrite(two_stage_run, cache, tmp_path,
                                                             capsys) -> None:  # fmt: skip
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    assert main(["predict", str(two_stage_run), str(source), str(out)]) == 2
    assert f"{out}: output file exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["predict", str(two_stage_run), str(source), str(out), "--overwrite"]) == 0
    assert nib.load(out).shape == nib.load(source).shape


@pytest.mark.parametrize("input_kind", ["folder", "cache"])
def test_a_folder_or_cache_input_with_a_file_output_is_refused(
    two_stage_run, cache, tmp_path, capsys, input_kind
) -> None:
    source = Path(cache).parent / "src" if input_kind == "folder" else Path(cache)
    out = tmp_path / "out.nii.gz"
    assert main(["predict", str(two_stage_run), str(source), str(out)]) == 2
    assert (
        f"{out}: a one-file OUTPUT is one label file for one input image, but INPUT "
        f"{source} is a folder (of images, or a cache); give a folder OUTPUT"
    ) in capsys.readouterr().err
    assert not out.exists()


def test_a_file_output_that_is_a_folder_is_refused(two_stage_run, cache, tmp_path, capsys) -> None:
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    out = tmp_path / "out.nii.gz"
    out.mkdir()
    assert main(["predict", str(two_stage_run), str(source), str(out), "--overwrite"]) == 2
    assert (
        f"{out}: OUTPUT names a file but is an existing folder; refusing to replace it"
        in capsys.readouterr().err
    )


def test_a_folder_output_records_the_models_classes(two_stage_run, cache, tmp_path) -> None:
    source = Path(cache).parent / "src" / "ct_train_1003_image.nii.gz"
    assert main(["predict", str(two_stage_run), str(source), str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "duoseg-complete.json").read_text())
    assert record["labels"] == {"Myo": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600,
                                "AA": 820, "PA": 850}  # fmt: skip


# ----------------------------------- the baseline's probabilities (issue 12, item 9)


class _Sharp(torch.nn.Module):
    """A confident unet3d: one class per block of 2 voxels, in a checkerboard of all
    classes - sharp edges everywhere, the B-splines' worst case for overshoot."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, y, w = (torch.arange(n) for n in x.shape[2:])
        z, y, w = z // 2, y // 2, w // 2
        index = (z[:, None, None] + 2 * y[None, :, None] + 3 * w[None, None, :]) % self.classes
        return 30.0 * F.one_hot(index, self.classes).permute(3, 0, 1, 2)[None].float()


def test_baseline_probabilities_are_probabilities(baseline_run, cache, monkeypatch) -> None:
    registry = load_plugins()
    model = load_model(baseline_run, registry)
    model.networks["unet3d"] = _Sharp(model.classes)  # type: ignore[assignment]
    case = open_cache(cache, registry).case("ct_train_1001")
    values: list[torch.Tensor] = []  # the B-splines' values, before clipping
    clip = resampled.as_probabilities
    monkeypatch.setattr(resampled, "as_probabilities", lambda v: values.append(v) or clip(v))
    sink = MemorySink()
    predict_case(model, case, sink, Options(memory_budget_mib=1, probabilities=True))
    assert sink.probabilities is not None
    probabilities = sink.probabilities.astype(np.float32)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=4e-3)  # float16 per class
    overshooting = torch.cat(values, 1)
    assert overshooting.min() < -0.05 and overshooting.max() > 1.05  # clipped
    # The labels are still the resampled values' argmax.
    np.testing.assert_array_equal(sink.labels, overshooting.argmax(0).numpy())
