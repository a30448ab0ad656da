"""duoseg through its Python API, end to end on the built-in phantoms.

    python examples/quickstart.py [--out DIR] [--fast]

Phantom CTs -> a Zarr cache -> the paper's four training steps -> a model package ->
full-resolution segmentation of the held-out case, streamed -> the paper's table of
Dice, Jaccard, ASD and HD95. ``--fast`` shrinks everything to a smoke test (CI runs it).
Only ``duoseg`` itself is used (and the phantoms, to have data).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import duoseg
import nibabel as nib
from duoseg.phantoms import phantom_cache

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

    # 2. Train: the shipped tiny config on that cache (and, for --fast, a smaller budget),
    # as `duoseg train CONFIG --cache ... --set ...` does.
    overrides = []
    if args.fast:
        overrides += ["schedule.params.iterations=[2, 2, 1, 2]",
                      "schedule.params.subvolume_sizes=[16]"]  # fmt: skip
    run = duoseg.train(CONFIGS / "tiny.toml", cache=cache, out=out / "run", overrides=overrides)

    # 3. One file to hand on: weights, config, preprocessing and classes (`duoseg export`).
    package = duoseg.export(run, out / "model.zip", description="quickstart phantom model")

    # 4. Segment the held-out case at full resolution, straight from its NIfTI file; the
    # labels come back as a nibabel image in that file's grid.
    model = duoseg.load(package)
    labels = model.segment(out / "data" / "src" / "ct_train_1005_image.nii.gz")
    prediction = out / "prediction" / "ct_train_1005_label.nii.gz"
    prediction.parent.mkdir(parents=True, exist_ok=True)
    nib.save(labels, prediction)

    # 5. Evaluate against the ground truth; the table is data (result.table) and prints.
    result = duoseg.evaluate(prediction, out / "data" / "src" / "ct_train_1005_label.nii.gz")
    print(result)
    print(f"whole-heart Dice {result.table['dice']['WH']['mean']:.3f}; everything is under {out}")


if __name__ == "__main__":
    main()
