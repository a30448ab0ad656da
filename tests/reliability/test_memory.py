"""Memory stays flat over many cases: ``predict`` on a folder of 30 cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from duoseg.phantoms import write_phantoms

from .conftest import SMALL

pytestmark = pytest.mark.slow
CASES = 30

SCRIPT = """
import json, sys
from pathlib import Path
from duoseg.core import load_plugins
from duoseg.core.inference.streaming import Options
from duoseg.core.inference.predict import predict_paths

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

peaks = []
predict_paths(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), options=Options(),
              device="cpu", cases=None, overwrite=False, registry=load_plugins(),
              on_case=lambda report: peaks.append(peak_mib()))
print(json.dumps(peaks))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_after_30_cases_is_within_10_percent_of_after_5(
    trained_run: Path, tmp_path: Path
) -> None:
    # Three distinct phantoms, each ten times under other names: the largest ROI is met
    # within the first five cases, so any growth after that is memory kept, not a
    # bigger case.
    pairs = write_phantoms(tmp_path / "src", cases=3, size=SMALL, seed=21)
    (tmp_path / "in").mkdir()
    for index in range(CASES):
        for path in pairs[index % 3]:
            suffix = path.name.split("_", 3)[-1]  # image.nii.gz / label.nii.gz
            shutil.copyfile(path, tmp_path / "in" / f"ct_train_{2001 + index}_{suffix}")
    paths = [str(trained_run), str(tmp_path / "in"), str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-c", SCRIPT, *paths], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(peaks) == CASES
    print(f"peak RSS after case 5: {peaks[4]:.0f} MiB, after case 30: {peaks[-1]:.0f} MiB")
    assert peaks[-1] <= 1.1 * peaks[4], peaks
