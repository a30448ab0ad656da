"""The examples run (fast settings) so none rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_fast(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``python examples/SCRIPT --fast --out OUT``; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--fast", "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    result = run_fast("quickstart.py", tmp_path)
    assert "| metric | Myo | LA | LV | RA | RV | AA | PA | WH |" in result.stdout
    assert (tmp_path / "prediction" / "ct_train_1005_label.nii.gz").exists()


@pytest.mark.slow
def test_ablation_trains_every_variant(tmp_path: Path) -> None:
    run_fast("ablation.py", tmp_path)
    table = (tmp_path / "ablation.md").read_text()
    for variant in ("full schedule", "without step 1", "without step 2", "without step 3"):
        assert f"| {variant} | " in table
    assert (tmp_path / "ct_train_1005_ablation.png").stat().st_size > 0


@pytest.mark.slow
def test_mmwhs_script_runs_on_challenge_named_phantoms(tmp_path: Path) -> None:
    from duoseg.phantoms import write_phantoms

    write_phantoms(tmp_path / "ct_train", cases=20, size=(48, 40, 32), seed=5)
    tiny = ["--set", "schedule.params.iterations=1",
            "--set", "schedule.params.subvolume_sizes=[16]",
            "--set", 'train.device="cpu"', "--set", "train.checkpoint_every=1"]  # fmt: skip
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's duoseg
    for config in ("ct.toml", "ct_baseline.toml"):  # every config is valid as shipped
        from duoseg.core import load_config, load_plugins
        from duoseg.core.config import check_components

        check_components(load_config(EXAMPLES / "mmwhs" / config), load_plugins(), source=config)
    result = subprocess.run(
        ["bash", str(EXAMPLES / "mmwhs" / "run.sh"), "ct", str(tmp_path / "ct_train"),
         str(tmp_path / "out"), *tiny],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "DEVICE": "cpu", "PATH": path},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for fold in range(3):
        for model in ("ct", "ct_baseline"):
            assert (tmp_path / "out" / f"fold{fold}" / f"{model}.json").exists()
    assert result.stdout.count("| Dice |") == 6
