"""GPU full-resolution inference figures: Zarr in, Zarr out, 512 x 512 x Z CT phantoms.

    python benchmarks/gpu_fullres.py [--json OUT.json] [--depths 128 256 363]
        [--net2 KEY=VALUE ...]

For each depth: end-to-end seconds (read, Net1, ROI, Net2 streamed, write), Net2
slices/s, peak GPU memory (torch.cuda.max_memory_allocated), in fp32 (TF32 off) and
bf16. Networks at the paper's default width with random weights: speed does not depend
on the weights, but the ROI does, so the ROI is the one a trained Net1 gives - the
heart's box from the phantom's coarse label plus the 10 mm margin. One whole-volume
run shows the worst case. ``--net2`` sets Net2 parameters (TOML values), e.g.
``decoder_kernel=3``. Slabs are written by the streaming driver's writer thread while
the next is computed. Exits 0 with a note without CUDA.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache
from duoseg.core.inference.outputs import ZarrSink, finish_output, prepare_output
from duoseg.core.inference.streaming import Options, predict_case, whole_volume
from duoseg.core.interfaces.method import Model
from duoseg.phantoms import phantom_cache
from duoseg.plugins.methods.two_stage import TwoStage, TwoStageOptions, dynamic_tile

from benchmarks.training_setup import MMWHS_DATA


def run(model: Model, cache: Path, out: Path, options: Options) -> dict[str, float]:
    if out.exists():
        shutil.rmtree(out)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    reader = open_cache(cache)
    case = reader.case(reader.cases()[0])
    prepare_output(out, overwrite=True)
    report = predict_case(model, case, ZarrSink(out), options)
    finish_output(out, [case.case_id], [])
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    depth = report.roi[0][1] - report.roi[0][0]
    return {
        "end_to_end_s": total,
        "net2_slices_per_s": depth / report.seconds["stream"],
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
        "roi": report.roi,
        "slab": report.slab,
        "net1_s": report.details["net1_seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--depths", type=int, nargs="+", default=[128, 256, 363])
    parser.add_argument("--budget-mib", type=float, default=2048.0, help="Net2 slab budget")
    parser.add_argument("--net2", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU full-resolution benchmark skipped")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    registry = load_plugins(entry_points=False)
    pairs = (item.split("=", 1) for item in args.net2)
    net2 = {key: tomllib.loads(f"v = {value}")["v"] for key, value in pairs}
    params: dict[str, dict[str, Any]] = {"net1": {}, "net2": net2}
    networks = {n: registry.build("network", n, **params[n]).cuda().eval() for n in params}
    model = Model(networks, MMWHS_DATA, torch.device("cuda"), TwoStage())
    root = Path(tempfile.mkdtemp(prefix="duoseg-gpu-fullres-"))
    rows = []
    for depth in args.depths:
        cache = phantom_cache(root / f"z{depth}", cases=1, size=(512, 512, depth), seed=depth)
        reader = open_cache(cache)
        case = reader.case(reader.cases()[0])
        heart = (case.coarse_label[...] > 0).astype(np.float32)
        roi, _ = dynamic_tile(heart, case.meta, TwoStageOptions())
        whole = whole_volume(case.meta.shape)
        runs = [("fp32", roi), ("bf16", roi)] + ([("bf16", whole)] if depth == 256 else [])
        for precision, box in runs:
            tile = {"roi": [[s.start, s.stop] for s in box]}
            options = Options(memory_budget_mib=args.budget_mib, precision=precision, method=tile)
            run(model, cache, root / "warm.zarr", options)  # cudnn autotuning
            row = run(model, cache, root / "out.zarr", options)
            row.update(depth=depth, precision=precision, whole_volume=box is whole)
            rows.append(row)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  net2 {net2}")
    print("volume        ROI (z, y, x)        precision  end-to-end s  Net2 slices/s  peak GPU GiB")
    for r in rows:
        extent = "x".join(str(hi - lo) for lo, hi in r["roi"])
        volume = f"512x512x{r['depth']}"
        print(
            f"{volume:<13} {extent:<20} {r['precision']:<9}  {r['end_to_end_s']:12.3f}  "
            f"{r['net2_slices_per_s']:13.1f}  {r['peak_gpu_gib']:12.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
