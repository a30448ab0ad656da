"""Net1 as the localiser on chest-wide CT: its dynamic tile's share of the volume and
each structure's recall inside it, beside the tile an oracle would cut (the labels' box).

    python -m benchmarks.localise OUT_DIR [--iterations 100 300] [--train 8] [--test 3]
        [--margins 5 10] [--seed 0]

Writes ``--train`` + 1 (validation) + ``--test`` whole-chest phantoms at the CT
protocol's voxels (512 x 512 x 256 at 0.40-0.48 mm, patients off-centre), builds their
caches, trains Net1 through steps 1-2 of ``demo_two_stage.toml`` for a fixed number of
iterations (not seconds: the result must not depend on the machine's load), then cuts
the tile of every validation and test case with and without ``largest_component`` at
each margin. Writes ``OUT_DIR/localise.json`` and prints a table. A stage-3/4 run is not
needed for the tile, so training stops after step 2's validation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from duoseg.core import Registry, load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.inference.model import load_model
from duoseg.core.interfaces.store import CacheCase
from duoseg.core.training.trainer import Trainer, config_as_dict
from duoseg.phantoms import write_phantoms
from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile, net1_probabilities


def phantoms(out: Path, train: int, test: int, seed: int, registry: Registry) -> tuple[Path, Path]:
    """Training (+ one validation) and test caches of whole-chest phantoms."""
    caches = []
    for name, first, count in (("train", 0, train + 1), ("test", train + 1, test)):
        write_phantoms(out / name, cases=count, first=first, seed=seed, workers=2)
        importer, store = registry.build("importer", "mmwhs"), registry.build("store", "zarr")
        build_cache(out / name, out / f"{name}.zarr", importer=importer, store=store)
        caches.append(out / f"{name}.zarr")
    return caches[0], caches[1]


def train_net1(cache: Path, validation: str, run: Path, iterations: list[int],
               registry: Registry) -> float:  # fmt: skip
    """Steps 1-2 of the demo's config; returns step 2's validation Dice (coarse grid)."""
    settings = [f"data.cache={json.dumps(str(cache))}",
                f"data.validation_cases=[{json.dumps(validation)}]",
                f"schedule.params.iterations=[{iterations[0]}, {iterations[1]}, 0, 0]"]  # fmt: skip
    configs = resources.files("duoseg.apps") / "configs" / "demo_two_stage.toml"
    with resources.as_file(configs) as path:
        config = load_config(path, settings)
    trainer = Trainer(config, registry, run, source=str(path), raw_config=config_as_dict(config))
    # Steps 1-2 only: steps 3-4 would validate a whole-volume Net2 prediction for nothing.
    trainer.schedule = replace(trainer.schedule, stages=trainer.schedule.stages[:2])
    trainer.run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return float([r for r in rows if "validation_mean_dice" in r][-1]["validation_mean_dice"])


def tile_rows(
    case: CacheCase, foreground: np.ndarray, margins: list[float]
) -> list[dict[str, Any]]:
    label = case.label[...]
    names = case.meta.class_names[1:]
    total = np.bincount(label.ravel(), minlength=len(names) + 1)[1:]
    found = np.argwhere(label > 0)
    rows = []
    for margin in margins:
        steps = [math.ceil(margin / s) for s in case.meta.spacing]
        low, high = (
            np.maximum(found.min(0) - steps, 0),
            np.minimum(found.max(0) + 1 + steps, label.shape),
        )
        oracle = float(np.prod(high - low) / label.size)
        for lcc in (False, True):
            options = TwoStageOptions(margin_mm=margin, largest_component=lcc)
            box, empty = dynamic_tile(foreground, case.meta, options)
            inside = np.bincount(label[box].ravel(), minlength=len(names) + 1)[1:]
            recall = inside / np.maximum(total, 1)
            rows.append({
                "case": case.case_id, "margin_mm": margin, "largest_component": lcc,
                "fraction": float(np.prod([s.stop - s.start for s in box]) / label.size),
                "oracle_fraction": oracle, "empty": empty,
                "recall": dict(zip(names, recall.round(5).tolist(), strict=True)),
                "box": [[s.start, s.stop] for s in box],
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--iterations", type=int, nargs=2, default=[100, 300])
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--test", type=int, default=3)
    parser.add_argument("--margins", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    registry = load_plugins()
    start = time.perf_counter()
    train_cache, test_cache = phantoms(args.out, args.train, args.test, args.seed, registry)
    data_seconds = time.perf_counter() - start
    validation = f"ct_train_{1001 + args.train}"
    start = time.perf_counter()
    dice = train_net1(train_cache, validation, args.out / "run", args.iterations, registry)
    train_seconds = time.perf_counter() - start
    model = load_model(args.out / "run", registry)
    rows = []
    for path, cases in ((train_cache, [validation]), (test_cache, None)):
        cache = open_cache(path, registry)
        for case_id in cases or cache.cases():
            case = cache.case(case_id)
            probabilities = net1_probabilities(
                model.networks["net1"], case.coarse_image[...], "cpu"
            )
            rows += tile_rows(case, (1 - probabilities[0]).numpy(), args.margins)
    result = {"iterations": args.iterations, "validation_dice": dice, "validation": validation,
              "data_seconds": data_seconds, "train_seconds": train_seconds,
              "tiles": rows}  # fmt: skip
    (args.out / "localise.json").write_text(json.dumps(result, indent=1))
    print(f"Net1 {args.iterations} iterations, {train_seconds:.0f} s; validation Dice {dice:.3f}")
    print("| case | margin | largest component | tile | oracle box | least recall |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        least = min(row["recall"], key=row["recall"].get)
        print(f"| {row['case']} | {row['margin_mm']:g} mm | {row['largest_component']} | "
              f"{row['fraction']:.1%} | {row['oracle_fraction']:.1%} | "
              f"{row['recall'][least]:.2%} ({least}) |")  # fmt: skip


if __name__ == "__main__":
    main()
