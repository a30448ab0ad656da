"""GPU training figures at the paper's settings on real-size phantoms.

    python benchmarks/gpu_train.py [--json OUT.json] [--cases 3] [--iterations 12]
        [--override KEY=VALUE ...]

Builds a cache of 512x512x256 CT phantoms (about 15 s a case), then times each
``wang2018`` stage at the paper's settings - subvolumes drawn from {64, 128, 256},
K = 9 stacks of whole 512x512 slices, Net1 and Net2 at default width, bf16 autocast
- with DataLoader workers. For each stage: iterations/s, the share of the step the
GPU is busy (not waiting for data), peak memory; and the projected time of the
paper's 12,800-iteration schedule (3,200 per step). ``--override`` takes config
overrides, e.g. ``train.compile=true`` or ``networks.net2.params.decoder_kernel=3``
(the cheaper decoder the CPU Pareto study chose). Exits 0 with a note without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duoseg.core.training.checkpoint import TrainState
from duoseg.phantoms import phantom_cache

from benchmarks.training_setup import make_trainer

CONFIG = """
seed = 0
[networks.net1]
component = "net1"
[networks.net2]
component = "net2"
[schedule]
component = "wang2018"
[schedule.params]
iterations = 3200
subvolume_sizes = {sizes}
k = 9
batch_size = 1
[train]
device = "{device}"
workers = {workers}
checkpoint_every = 0
"""
PAPER_ITERATIONS_PER_STEP = 3200


def time_stage(trainer, index: int, iterations: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    stage = trainer.schedule.stages[index]
    optimizer = trainer._optimizer(stage)
    state = TrainState(stage=index)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    loader = trainer._batches(stage, state)
    waits, computes = [], []
    for step in range(iterations + 2):
        start = time.perf_counter()
        batch = next(loader)
        fetched = time.perf_counter()
        trainer._train_step(stage, batch, optimizer, state)
        if cuda:
            torch.cuda.synchronize()
        done = time.perf_counter()
        if step >= 2:  # warm-up: cudnn autotuning, first Net1 outputs of stage 4
            waits.append(fetched - start)
            computes.append(done - fetched)
    total = sum(waits) + sum(computes)
    return {
        "stage": stage.name,
        "iterations_per_s": iterations / total,
        "gpu_busy_fraction": sum(computes) / total,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--size", type=int, nargs=3, default=(512, 512, 256), metavar=("X", "Y", "Z")
    )
    parser.add_argument("--subvolumes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--device", default="cuda", help="cpu runs a smoke test of this script")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: GPU training benchmark skipped")
        return 0
    torch.backends.cudnn.benchmark = True
    root = Path(tempfile.mkdtemp(prefix="duoseg-gpu-train-"))
    start = time.perf_counter()
    cache = phantom_cache(root, cases=args.cases, size=tuple(args.size))
    print(
        f"cache of {args.cases} cases of {args.size} built in {time.perf_counter() - start:.0f} s"
    )
    config = root / "config.toml"
    config.write_text(
        CONFIG.format(workers=args.workers, sizes=args.subvolumes, device=args.device)
    )
    trainer = make_trainer(config, cache, root / "run", args.override)
    rows = [time_stage(trainer, i, args.iterations) for i in range(4)]
    projected = sum(PAPER_ITERATIONS_PER_STEP / r["iterations_per_s"] for r in rows)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {name}  torch {torch.__version__}  bf16 autocast on CUDA  {args.override}")
    print("stage            it/s   GPU busy  peak GiB")
    for r in rows:
        print(f"{r['stage']:<15} {r['iterations_per_s']:6.2f}   {r['gpu_busy_fraction']:6.1%}  "
              f"{r['peak_gib']:8.2f}")  # fmt: skip
    print(f"projected 12,800 iterations (3,200 per step): {projected / 60:.1f} min")
    if args.json:
        summary = {"rows": rows, "projected_minutes": projected / 60, "overrides": args.override}
        Path(args.json).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
