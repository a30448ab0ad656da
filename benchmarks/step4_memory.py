"""Peak RSS of training step 4 as it meets more and more cases, in its own process.

    python benchmarks/step4_memory.py CACHE OUT [--config examples/configs/tiny.toml]

Runs step 4 (Net2 on K-slice stacks, Net1 frozen) until every training case of CACHE
has been drawn, and prints one JSON line: the RSS once 5 cases had been seen, once all
had, and the peak. Step 4 keeps Net1's *coarse* output per case and upsamples it per
sample, so the figure must not grow with the number (or the size) of the cases.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

import torch
from duoseg.core.training.checkpoint import TrainState

from benchmarks.memory import rss_mib
from benchmarks.training_setup import make_trainer

TINY = Path(__file__).resolve().parents[1] / "examples" / "configs" / "tiny.toml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--config", type=Path, default=TINY)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.manual_seed(0)
    overrides = ["data.validation_cases=[]", *args.set]
    trainer = make_trainer(args.config, args.cache, args.out, overrides)
    stage = trainer.schedule.stages[-1]
    assert stage.kind == "net2_stacks", stage.kind
    optimizer = trainer._optimizer(stage)
    state = TrainState(stage=len(trainer.schedule.stages) - 1)
    loaded = rss_mib("VmRSS")
    seen: list[str] = []
    after_five: float | None = None
    start, steps = time.perf_counter(), 0
    for batch in trainer._batches(stage, state):
        trainer._train_step(stage, batch, optimizer, state)
        steps += 1
        seen += [c for c in dict.fromkeys(batch["case_id"]) if c not in seen]
        if after_five is None and len(seen) >= 5:
            after_five = rss_mib("VmRSS")
        if len(seen) == len(trainer.training_cases) or steps == args.max_steps:
            break
    print(json.dumps({
        "cases": len(trainer.training_cases),
        "cases_seen": len(seen),
        "coarse_outputs_kept": len(trainer.method._coarse),  # type: ignore[attr-defined]
        "steps": steps,
        "seconds_per_step": (time.perf_counter() - start) / steps,
        "rss_loaded_mib": loaded,
        "rss_after_5_cases_mib": after_five,
        "rss_after_all_cases_mib": rss_mib("VmRSS"),
        "peak_rss_mib": rss_mib("VmHWM"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
