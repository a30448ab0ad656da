"""Shared pieces of the reliability campaign (RELIABILITY.md lists every test).

Repeated fault injections run ``DUOSEG_RELIABILITY_REPEATS`` times (CI: 4); the full
campaign is ``DUOSEG_RELIABILITY_REPEATS=12 pytest tests/reliability``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from duoseg.phantoms import phantom_cache, write_phantoms

REPEATS = int(os.environ.get("DUOSEG_RELIABILITY_REPEATS", "4"))
DUOSEG = str(Path(sys.executable).parent / "duoseg")
SMALL = (64, 56, 40)


def run(args: Sequence[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """``duoseg ARGS`` to completion."""
    return subprocess.run([DUOSEG, *args], capture_output=True, text=True, check=False, **kwargs)


def timed_run(args: Sequence[str]) -> float:
    """Seconds an uninterrupted ``duoseg ARGS`` takes (it must succeed)."""
    start = time.perf_counter()
    result = run(args)
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - start


def kill_at(args: Sequence[str], delay: float) -> int:
    """Start ``duoseg ARGS``, SIGKILL it after ``delay`` seconds; its exit status
    (-9 when the kill landed, 0 when it had already finished)."""
    process = subprocess.Popen([DUOSEG, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    return process.wait()


def kill_points(seconds: float, seed: int) -> list[float]:
    """``REPEATS`` random delays spread over an uninterrupted run of ``seconds``
    (startup included: a kill may land anywhere from the imports to the last write)."""
    rng = random.Random(seed)
    return [rng.uniform(0.2, 1.0) * seconds for _ in range(REPEATS)]


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small phantom NIfTI pairs."""
    root = tmp_path_factory.mktemp("reliability-src")
    write_phantoms(root, cases=5, size=SMALL, seed=11)
    return root


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_cache(tmp_path_factory.mktemp("reliability-cache"), cases=5, size=SMALL,
                         seed=11, chunks=(8, 32, 32),
                         levels={"coarse": 3.0, "baseline": 2.0})  # fmt: skip


TWO_STAGE = """
seed = 3
[data]
validation_cases = ["ct_train_1005"]
[networks.net1]
component = "net1"
params = { base_width = 4, kernel_size = 3 }
[networks.net2]
component = "net2"
params = { base_width = 4, k = 3, norm = "instance", guidance = "probabilities", residual = true }
[schedule]
component = "wang2018"
params = { iterations = [3, 6, 2, 9], subvolume_sizes = [16], k = 3, stack_crop = [32, 32] }
[train]
checkpoint_every = 1
workers = 0
"""


@pytest.fixture(scope="session")
def trained_run(small_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability-run")
    config = root / "config.toml"
    config.write_text(TWO_STAGE)
    result = run(["train", str(config), "--cache", str(small_cache), "--out", str(root / "run")])
    assert result.returncode == 0, result.stderr
    return root / "run"
