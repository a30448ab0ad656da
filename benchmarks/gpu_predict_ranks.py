"""Per-GPU throughput of ``duoseg predict``: cases/s and Mvoxel/s, NIfTI in, one rank per GPU.

    python benchmarks/gpu_predict_ranks.py OUT.json [--run RUN_DIR] [--cases 4]
        [--size 512 512 256] [--ranks 1] [--output zarr|nifti] [--budget-mib 2048]
        [--whole-volume]

Writes ``--cases`` uncompressed phantom CTs (``--size`` x y z voxels), then times the
command line, ``duoseg predict RUN IN OUT --device cuda`` (under ``torchrun
--nproc_per_node R --no-python`` for R > 1 ranks), twice: on R cases (one per rank),
then on all of them. The second run gives the end-to-end rate (process start, CUDA
start and model load included); the difference between the two, the steady rate of a
long run (reading, preparing, predicting and writing the extra cases). Both are per GPU.
The completion record's per-case seconds (prepare, stream, total) say where a case's
time goes; reading and preparing a NIfTI input happens before them.

Without ``--run``, the networks are the paper's default widths, trained for one step
(speed does not depend on the weights); the ROI does depend on them, so it is fixed to
the phantoms' heart box plus the 10 mm margin, as a trained Net1 gives
(``--whole-volume``: no ROI, Net2's worst case). fp32, the command line's precision.
Exits 0 with a note without CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duoseg.core import load_plugins
from duoseg.core.interfaces.store import COMPLETION_FILE
from duoseg.phantoms import write_phantoms

UNTRAINED = """
seed = 0
[networks.net1]
component = "net1"
[networks.net2]
component = "net2"
[schedule]
component = "wang2018"
params = {{ iterations = [1, 0, 0, 0], subvolume_sizes = [32] }}
[train]
device = "{device}"
"""
MARGIN_MM = 10.0  # two_stage's default margin around Net1's foreground


def untrained_run(root: Path, source: Path, device: str) -> Path:
    """A wang2018 run at the default widths after one step of stage 1 on one phantom."""
    one, cache, run = root / "train-src", root / "train.zarr", root / "untrained-run"
    _link_first(source, one, labels=True)
    config = root / "untrained.toml"
    config.write_text(UNTRAINED.format(device=device))
    _duoseg(["cache", "build", str(one), str(cache)])
    _duoseg(["train", str(config), "--cache", str(cache), "--out", str(run)])
    return run


def _link_first(source: Path, folder: Path, *, labels: bool, count: int = 1) -> None:
    """``folder`` with links to the first ``count`` images of ``source`` (and labels)."""
    folder.mkdir()
    for image in sorted(source.glob("*_image.nii"))[:count]:
        (folder / image.name).symlink_to(image)
        if labels:
            label = image.with_name(image.name.replace("_image.", "_label."))
            (folder / label.name).symlink_to(label)


def heart_roi(source: Path) -> list[list[int]]:
    """The union of the phantoms' heart boxes plus the margin, (z, y, x) voxels of the
    grid prediction uses (the importer's canonical orientation)."""
    importer = load_plugins(entry_points=False).build("importer", "mmwhs")
    low, high = [math.inf] * 3, [-math.inf] * 3
    for pair in importer.discover(source):
        case = importer.load(pair)
        assert case.label is not None
        for axis in range(3):
            hits = np.flatnonzero((case.label > 0).any(axis=tuple({0, 1, 2} - {axis})))
            margin = math.ceil(MARGIN_MM / case.spacing[axis])
            low[axis] = min(low[axis], max(int(hits[0]) - margin, 0))
            high[axis] = max(high[axis], min(int(hits[-1]) + 1 + margin, case.label.shape[axis]))
    return [[int(lo), int(hi)] for lo, hi in zip(low, high, strict=True)]


def _duoseg(args: list[str], ranks: int = 1) -> float:
    """Run the command line; its wall-clock seconds."""
    prefix = ["duoseg"]
    if ranks > 1:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                  str(ranks), "--no-python", "duoseg"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"duoseg {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return seconds


def predict(run: Path, source: Path, out: Path, ranks: int, options: list[str]) -> dict[str, Any]:
    seconds = _duoseg(["predict", str(run), str(source), str(out), *options], ranks)
    reports = json.loads((out / COMPLETION_FILE).read_text())["reports"]
    mean = {
        key: sum(r["seconds"][key] for r in reports) / len(reports)
        for key in ("prepare", "stream", "total")
    }
    return {"cases": len(reports), "wall_s": seconds, "mean_case_s": mean,
            "roi": [r["roi"] for r in reports], "slab": [r["slab"] for r in reports]}  # fmt: skip


def per_gpu(cases: int, seconds: float, voxels: int, ranks: int) -> dict[str, float]:
    rate = cases / seconds / ranks
    return {"cases_per_s": rate, "mvoxel_per_s": rate * voxels / 1e6}


def measure(args: argparse.Namespace, root: Path, device: str) -> dict[str, Any]:
    size = tuple(args.size)
    source = root / "src"
    start = time.perf_counter()
    write_phantoms(source, cases=args.cases, size=size, compress=False)
    print(f"{args.cases} phantoms, {'x'.join(map(str, size))}: {time.perf_counter() - start:.1f} s")
    options = ["--device", device, "--memory-budget", str(args.budget_mib)]
    run = args.run
    if run is None:
        run = untrained_run(root, source, device)
        if not args.whole_volume:
            options += ["--method-option", f"roi={json.dumps(heart_roi(source))}"]
    warm = root / "warm"
    _link_first(source, warm, labels=False, count=args.ranks)
    suffix = ".zarr" if args.output == "zarr" else ""
    first = predict(run, warm, root / f"pred-warm{suffix}", args.ranks, options)
    every = predict(run, source, root / f"pred-all{suffix}", args.ranks, options)
    voxels = math.prod(size)
    steady = every["wall_s"] - first["wall_s"]
    return {
        "size_xyz": list(size),
        "ranks": args.ranks,
        "output": args.output,
        "trained_run": str(args.run) if args.run else None,
        "options": options,
        "first_run": first,
        "all_cases": every,
        "end_to_end_per_gpu": per_gpu(every["cases"], every["wall_s"], voxels, args.ranks),
        "steady_per_gpu": per_gpu(every["cases"] - first["cases"], steady, voxels, args.ranks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path, help="where the figures go")
    parser.add_argument("--run", type=Path, help="a trained run (default: untrained networks)")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 256], metavar="N")
    parser.add_argument("--ranks", type=int, default=1, help="GPUs, one rank each")
    parser.add_argument("--output", choices=("zarr", "nifti"), default="zarr")
    parser.add_argument("--budget-mib", type=float, default=2048.0, help="Net2 slab budget")
    parser.add_argument("--whole-volume", action="store_true", help="untrained: no fixed ROI")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU prediction throughput benchmark skipped")
        return 0
    if not 1 <= args.ranks <= torch.cuda.device_count() or args.cases <= args.ranks:
        raise SystemExit(
            f"need 1 <= --ranks <= {torch.cuda.device_count()} (the GPUs) and --cases > "
            f"--ranks; got --ranks {args.ranks}, --cases {args.cases}"
        )
    root = Path(tempfile.mkdtemp(prefix="duoseg-gpu-predict-"))
    try:
        result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                  **measure(args, root, "cuda")}  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(result, indent=1))
    for name in ("end_to_end_per_gpu", "steady_per_gpu"):
        rate = result[name]
        print(f"{name}: {rate['cases_per_s']:.3f} cases/s, {rate['mvoxel_per_s']:.1f} Mvoxel/s")
    print(f"mean seconds per case (completion record): {result['all_cases']['mean_case_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
