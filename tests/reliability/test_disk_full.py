"""Running out of disk while building a cache, checkpointing and predicting: a clean
one-line error, nothing half-written under a final name, earlier outputs intact.

The disk is a small tmpfs of the test's own where the machine allows mounting one
(root in a container usually may); otherwise the limit is simulated at the write
call with ``RLIMIT_FSIZE`` (a write past the limit fails with EFBIG)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.errors import DataError
from duoseg.core.inference.outputs import PredictionReader, is_complete
from duoseg.core.training.checkpoint import load_checkpoint

from .conftest import DUOSEG, TWO_STAGE

pytestmark = pytest.mark.slow
HEADROOM = 48 * 1024  # bytes left free for the run that must fail
FULL = r"(No space left on device|File too large)"


class Disk:
    """A folder whose free space can be cut to ``HEADROOM``."""

    def __init__(self, root: Path, mounted: bool) -> None:
        self.root, self.mounted = root, mounted

    def fill(self) -> None:
        if self.mounted:
            stats = os.statvfs(self.root)
            free = stats.f_bavail * stats.f_frsize
            with open(self.root / "filler", "wb") as handle:
                handle.write(b"\0" * max(free - HEADROOM, 0))

    def limit(self) -> Callable[[], None] | None:
        if self.mounted:
            return None

        def preexec() -> None:  # simulated: no single file may grow past HEADROOM
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (HEADROOM, HEADROOM))

        return preexec


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    root = tmp_path / "small-disk"
    root.mkdir()
    mounted = sys.platform == "linux" and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)], capture_output=True,
        check=False,
    ).returncode == 0  # fmt: skip
    try:
        yield Disk(root, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=False)


def _run(disk: Disk, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DUOSEG, *args], capture_output=True, text=True, check=False,
                          preexec_fn=disk.limit())  # fmt: skip


def _assert_clean_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "duoseg: error: " in line]
    assert len(errors) == 1 and re.search(FULL, errors[0]), result.stderr[-2000:]


def test_cache_build(disk: Disk, source: Path) -> None:
    earlier = disk.root / "earlier.zarr"
    first = _run(disk, ["cache", "build", str(source), str(earlier)])
    assert first.returncode == 0, first.stderr
    disk.fill()
    result = _run(disk, ["cache", "build", str(source), str(disk.root / "new.zarr")])
    _assert_clean_error(result)
    with pytest.raises(DataError):
        open_cache(disk.root / "new.zarr", load_plugins()).close()
    with open_cache(earlier, load_plugins()) as reader:
        assert reader.verify() == []


def test_checkpointing(disk: Disk, small_cache: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TWO_STAGE)
    earlier = disk.root / "earlier"
    first = _run(disk, ["train", str(config), "--cache", str(small_cache), "--out", str(earlier),
                        "--set", "schedule.params.iterations=[1, 1, 1, 1]"])  # fmt: skip
    assert first.returncode == 0, first.stderr
    disk.fill()
    out = disk.root / "new"
    result = _run(disk, ["train", str(config), "--cache", str(small_cache), "--out", str(out)])
    _assert_clean_error(result)
    assert not list(out.glob(".*.tmp")), "a temporary checkpoint was left behind"
    for checkpoint in [*out.glob("*.safetensors"), *earlier.glob("*.safetensors")]:
        load_checkpoint(checkpoint, load_plugins())  # whole, or absent


def test_prediction(disk: Disk, trained_run: Path, small_cache: Path) -> None:
    earlier = disk.root / "earlier.zarr"
    first = _run(disk, ["predict", str(trained_run), str(small_cache), str(earlier),
                        "--case", "ct_train_1001"])  # fmt: skip
    assert first.returncode == 0, first.stderr
    disk.fill()
    out = disk.root / "new.zarr"
    result = _run(disk, ["predict", str(trained_run), str(small_cache), str(out),
                         "--probabilities"])  # fmt: skip
    _assert_clean_error(result)
    assert not is_complete(out)
    assert PredictionReader(earlier).verify() == []
