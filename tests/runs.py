"""Small training configs on the phantom cache, and a helper that trains one through
the CLI (the session's trained runs in tests/conftest.py use them)."""

from __future__ import annotations

from pathlib import Path

TWO_STAGE = """
seed = 2
[networks.net1]
component = "net1"
params = { base_width = 4, norm = "instance" }
[networks.net2]
component = "net2"
params = { base_width = 4, k = 3, norm = "instance" }
[schedule]
component = "wang2018"
params = { iterations = [2, 1, 1, 1], subvolume_sizes = [16], k = 3, stack_crop = [32, 32] }
"""
BASELINE = """
seed = 2
[networks.unet3d]
component = "unet3d"
params = { base_width = 4 }
[schedule]
component = "baseline_unet3d"
params = { iterations = 2, subvolume_sizes = [16] }
"""


SLIDING_WINDOW = """
seed = 2
[networks.unet3d]
component = "unet3d"
params = { base_width = 4 }
[schedule]
component = "fullres_unet3d"
params = { iterations = 2, subvolume_sizes = [16, 24] }
[method]
component = "sliding_window"
params = { window = [16, 24, 24], batch = 2 }
"""


def train_run(tmp: Path, cache: Path, text: str, name: str) -> Path:
    from duoseg.apps.cli import main

    config = tmp / f"{name}.toml"
    config.write_text(text)
    assert main(["train", str(config), "--cache", str(cache), "--out", str(tmp / name)]) == 0
    return tmp / name
