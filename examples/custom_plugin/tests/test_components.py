"""The example plugin's components keep duoseg's contracts: a few lines each."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from duoseg.core.records.config import ComponentRef
from duoseg.plugins.importers import MMWHS_LABELS
from duoseg.testing import (
    LossConformance,
    MethodConformance,
    MethodRecipe,
    NetworkConformance,
    WriterConformance,
)


class TestResUNet3d(NetworkConformance):
    name = "resunet3d"
    params = {"width": 4}


class TestTversky(LossConformance):
    name = "tversky"


class TestClassMasks(WriterConformance):
    name = "class-masks"


class TestCascade(MethodConformance):
    name = "cascade"
    recipes = {
        "cascade": MethodRecipe(
            {"coarse": ComponentRef("unet3d", {"base_width": 4, "norm": "instance"}),
             "fine": ComponentRef("resunet3d", {"in_channels": 9, "width": 4, "levels": 2})},
            ComponentRef("cascade", {"iterations": 1, "subvolume_sizes": [16]}),
            {"window": [16, 24, 24]},
        )
    }  # fmt: skip


def test_tversky_with_equal_weights_is_the_soft_dice() -> None:
    from duoseg_example_plugin.tversky import TverskyLoss

    target = torch.tensor([[[1, 1, 0, 0]]])
    scores = torch.tensor([[[[0.0, 0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0, 0.0]]]])
    loss = TverskyLoss("probabilities", alpha=0.5, beta=0.5, smooth=0.0)
    # foreground: tp = 1, fp = 1, fn = 1 -> Dice 2 / 4
    assert float(loss(scores, target)) == pytest.approx(0.5)


@pytest.mark.slow
def test_the_example_config_trains_and_predicts_with_the_plugins_components(tmp_path) -> None:
    from pathlib import Path

    from duoseg.apps.cli import main
    from duoseg.phantoms import phantom_cache

    config = Path(__file__).resolve().parents[1] / "config.toml"
    # The baseline's schedule: its method reads the cache's 2 mm level.
    cache = phantom_cache(tmp_path / "data", cases=5, size=(64, 56, 40), seed=3,
                          levels={"coarse": 3.0, "baseline": 2.0})  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", str(config), "--cache", str(cache), "--out", str(run),
                 "--set", "schedule.params.iterations=3",
                 "--set", "schedule.params.subvolume_sizes=[32]"]) == 0  # fmt: skip
    header = (run / "last.safetensors").read_bytes()[:200_000]
    assert b"duoseg-example-plugin" in header  # the provenance names the plugin
    source = tmp_path / "data" / "src" / "ct_train_1005_image.nii.gz"
    assert main(["predict", str(run), str(source), str(tmp_path / "pred")]) == 0
    label_file = tmp_path / "pred" / "ct_train_1005_label.nii.gz"
    assert label_file.exists()
    # The plugin's writer, chosen by --format: one mask per structure, equal to the labels.
    masks = tmp_path / "masks"
    assert main(["predict", str(run), str(source), str(masks), "--format", "class-masks"]) == 0
    labels = np.asarray(nib.load(label_file).dataobj)
    written = sorted(p.name for p in (masks / "ct_train_1005").iterdir())
    assert written == sorted(f"{name}.nii.gz" for name in MMWHS_LABELS)
    for name, value in MMWHS_LABELS.items():
        mask = nib.load(masks / "ct_train_1005" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(mask.dataobj), labels == value)
        np.testing.assert_allclose(mask.affine, nib.load(label_file).affine)


@pytest.mark.slow
def test_the_cascade_method_trains_and_predicts_through_the_cli(tmp_path) -> None:
    """The plugin's own method, with its own roles and schedule, end to end: no line of
    duoseg's core names it."""
    import json
    from pathlib import Path

    import nibabel as nib
    import numpy as np
    from duoseg.apps.cli import main
    from duoseg.phantoms import phantom_cache

    config = Path(__file__).resolve().parents[1] / "cascade.toml"
    cache = phantom_cache(tmp_path / "data", cases=5, size=(64, 56, 40), seed=3)
    run = tmp_path / "run"
    assert main(["train", str(config), "--cache", str(cache), "--out", str(run),
                 "--set", "schedule.params.iterations=[2, 2]",
                 "--set", "schedule.params.subvolume_sizes=[24]",
                 "--set", "method.params.window=[24, 32, 32]"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows if "loss" in r] == ["coarse", "coarse", "fine", "fine"]
    assert {k for r in rows if "loss" in r for k in r} >= {"coarse.dice_ce", "fine.dice_ce"}
    header = (run / "last.safetensors").read_bytes()[:200_000]
    assert b"method:cascade" in header  # the provenance names the plugin's method
    source = tmp_path / "data" / "src" / "ct_train_1005_image.nii.gz"
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", str(run), str(source), str(out),
                 "--method-option", "overlap=0.25", "--memory-budget", "8"]) == 0  # fmt: skip
    labels = np.asarray(nib.load(out).dataobj)
    assert labels.shape == nib.load(source).shape
    assert set(np.unique(labels)) <= {0, 205, 420, 500, 550, 600, 820, 850}
    assert main(["predict", str(run), str(source), str(tmp_path / "p2.nii.gz"),
                 "--method-option", "threshold=0.3"]) == 2  # fmt: skip


def test_the_cascade_refuses_a_fine_network_blind_to_the_coarse_output(tmp_path) -> None:
    from duoseg.core import ConfigError, load_plugins

    registry = load_plugins()
    cascade = registry.build("method", "cascade")
    networks = {
        "coarse": registry.build("network", "unet3d", base_width=4),
        "fine": registry.build("network", "unet3d", base_width=4),
    }
    with pytest.raises(ConfigError, match=r"networks.fine takes 1 input channels; .* = 9\)"):
        cascade.check(networks, None)
