"""benchmarks/plot.py turns saved pytest-benchmark runs into charts (so it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PLOT = Path(__file__).resolve().parents[1] / "benchmarks" / "plot.py"


def _bench(name: str, **info: object) -> dict:
    return {"name": name, "extra_info": info, "stats": {"min": 1.0}}


def test_every_chart_is_drawn_from_a_saved_run(tmp_path: Path) -> None:
    depth = [_bench(f"test_memory_does_not_grow_with_depth[{d}]", voxels_per_s=1e6 + d,
                    peak_rss_mib=900.0, working_mib=600.0) for d in (64, 128, 256)]  # fmt: skip
    run = {"benchmarks": [
        *depth,
        _bench("test_peer_monai_sliding_window", voxels_per_s=2e6, working_mib=2900.0),
        _bench("test_random_patch_pair_reads[zarr]", pairs_per_s=700.0),
        _bench("test_random_patch_pair_reads[hdf5]", pairs_per_s=1100.0),
        _bench("test_sampler_throughput[uniform]", samples_per_s=100.0),
        _bench("test_sampling_memory_and_first_patch_latency", first_patch_s_max=0.02),
        _bench("test_peer_torchio_label_sampler", first_patch_s=7.0),
        _bench("test_accuracy_at_equal_training_time[monai]", mean_dice=0.8,
               inference_seconds=30.0, working_mib=900.0),
        _bench("test_accuracy_at_equal_training_time[two_stage]", mean_dice=0.6,
               inference_seconds=8.0, working_mib=300.0),
        _bench("test_ceiling", mean_dice=0.97),
        _bench("test_speed_on_a_512_case[two_stage-budget256]", seconds=9.0,
               working_mib=500.0),
        _bench("test_speed_on_a_512_case[two_stage-budget256-labels_box]", seconds=70.0,
               working_mib=450.0),
        _bench("test_speed_on_a_512_case[monai-budget1024]", seconds=20.0,
               working_mib=2900.0),
    ]}  # fmt: skip
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(run))
    result = subprocess.run([sys.executable, str(PLOT), str(saved), "--out", str(tmp_path / "c")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for chart in ("inference_depth", "patches", "peers", "accuracy"):
        assert (tmp_path / "c" / f"{chart}.png").stat().st_size > 0


def test_speed_labels_name_the_budget_and_a_given_box_only() -> None:
    from benchmarks.plot import _speed_label

    assert _speed_label("monai-budget1024") == "monai"
    assert _speed_label("two_stage-budget256") == "two_stage\n256 MiB"
    assert _speed_label("two_stage-budget256-labels_box") == "two_stage\n256 MiB\nlabels' box"
