"""duoseg through its Python API, end to end on the built-in phantoms.

    python examples/quickstart.py [--out DIR] [--fast]

Phantom CTs -> a Zarr cache -> the paper's four training steps -> full-resolution
prediction of the held-out case, streamed -> the paper's table of Dice, Jaccard, ASD
and HD95. ``--fast`` shrinks everything to a smoke test (CI runs it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from duoseg.apps.phantom import phantom_cache
from duoseg.core import load_config, load_plugins
from duoseg.core.inference.evaluate import evaluate, format_table
from duoseg.core.inference.predict import predict_paths
from duoseg.core.inference.streaming import Options
from duoseg.core.training.trainer import Trainer, config_as_dict

CONFIGS = Path(__file__).parent / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="working folder (default: temporary)"
    )
    parser.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="duoseg-quickstart-"))

    # 1. Data: five synthetic whole-heart CTs, imported into a chunked Zarr cache.
    size = (64, 56, 40) if args.fast else (160, 128, 80)
    cache = phantom_cache(out / "data", cases=5, size=size, seed=0)

    # 2. Train: the shipped tiny config with its data source (and, for --fast, budget)
    # overridden, as `duoseg train --cache ... --set ...` does.
    overrides = [f'data.cache="{cache}"']
    if args.fast:
        overrides += ["schedule.params.iterations=[2, 2, 1, 2]",
                      "schedule.params.subvolume_sizes=[16]"]  # fmt: skip
    config_path = CONFIGS / "tiny.toml"
    config = load_config(config_path, overrides)
    registry = load_plugins()
    run = out / "run"
    Trainer(config, registry, run, source=str(config_path), raw_config=config_as_dict(config)).run()

    # 3. Predict the held-out case at full resolution, straight from its NIfTI file.
    image = out / "data" / "src" / "ct_train_1005_image.nii.gz"
    predict_paths(run, image, out / "prediction", options=Options(), device="cpu",
                  cases=None, overwrite=True, registry=registry)  # fmt: skip

    # 4. Evaluate against the ground truth.
    truth = out / "data" / "src" / "ct_train_1005_label.nii.gz"
    result = evaluate(out / "prediction" / "ct_train_1005_label.nii.gz", truth, registry)
    print(format_table(result))
    print(f"everything is under {out}")


if __name__ == "__main__":
    main()
