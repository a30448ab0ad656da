from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from duoseg.apps.cli import main
from duoseg.apps.phantom import MMWHS_LABELS, make_case
from duoseg.core.data.grid import downsample_label, grid_shape


def test_a_case_is_a_pure_function_of_its_seed_and_number() -> None:
    a, b = make_case(3, 1, "ct"), make_case(3, 1, "ct")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    other = make_case(4, 1, "ct")
    assert a.spacing != other.spacing and not np.array_equal(a.label, other.label)


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_every_structure_is_present_with_mmwhs_values(modality: str) -> None:
    case = make_case(0, 0, modality)
    assert set(np.unique(case.label)) == {0, *MMWHS_LABELS.values()}
    assert case.image.shape == case.label.shape == (80, 128, 160)
    assert len(set(np.round(case.spacing, 3))) == 3  # anisotropic


def test_ct_blood_pools_share_one_contrast_level() -> None:
    case = make_case(0, 0, "ct")
    means = {n: float(case.image[case.label == v].mean()) for n, v in MMWHS_LABELS.items()}
    pools = [means[n] for n in ("LV", "RV", "LA", "RA", "AA", "PA")]
    assert max(pools) - min(pools) < 110  # told apart by shape and position, not HU
    assert min(pools) - means["Myo"] > 100


def test_mr_has_a_bias_field_and_rician_noise() -> None:
    case = make_case(0, 0, "mr")
    assert case.image.dtype == np.float32 and case.image.min() >= 0
    lv = case.label == MMWHS_LABELS["LV"]
    assert case.image[lv].std() > 0.02  # noise and bias, not a flat pool


def test_the_myocardium_is_too_thin_for_the_coarse_grid() -> None:
    """Even a perfect 3 mm labelling, upsampled, loses the thin myocardium."""
    case = make_case(0, 2, "ct")
    values = sorted({0, *MMWHS_LABELS.values()})
    index = np.searchsorted(values, case.label).astype(np.uint8)
    coarse = downsample_label(index, grid_shape(index.shape, case.spacing, 3.0), len(values))
    upsampled = F.interpolate(torch.from_numpy(coarse)[None, None].float(), size=index.shape)[0, 0]
    dice = {}
    for name in ("Myo", "LV"):
        c = values.index(MMWHS_LABELS[name])
        a, b = upsampled.numpy() == c, index == c
        dice[name] = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice["Myo"] < 0.8
    assert dice["LV"] > 0.9


def test_the_cli_writes_mmwhs_named_pairs(tmp_path: Path) -> None:
    assert (
        main(
            [
                "phantom",
                str(tmp_path),
                "--cases",
                "2",
                "--modality",
                "mr",
                "--size",
                "32",
                "32",
                "24",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "mr_train_1001_image.nii.gz", "mr_train_1001_label.nii.gz",
        "mr_train_1002_image.nii.gz", "mr_train_1002_label.nii.gz",
    ]  # fmt: skip


def test_bad_phantom_arguments_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["phantom", str(tmp_path), "--cases", "0"]) == 2
    assert "--cases must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"size must be three sizes \(x, y, z\) of at least 16"):
        make_case(0, 0, "ct", size=(8, 8, 8))
    with pytest.raises(ValueError, match="modality must be 'ct' or 'mr', got 'pet'"):
        make_case(0, 0, "pet")  # type: ignore[arg-type]
