"""The paper's Fig. 2 experiment on phantoms: which training steps matter?

    python examples/ablation.py [--out DIR] [--fast] [--device cpu|cuda]

Trains the demo's two-stage configuration four times on the same phantom cache - the
full four-step schedule and the schedule with step 1, 2 or 3 left out
(``schedule.params.omit``) - predicts the held-out cases with each and writes
``ablation.md`` (Dice per structure and variant) and an overlay of every variant on
one test case. Each variant trains for the demo preset's wall-clock (``train.seconds``):
about 25 minutes on 2 CPU cores for the four; ``--fast``
shrinks everything to a smoke test (CI runs it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from duoseg.apps.demo import PRESETS, mean_dice, predict_and_evaluate, prepare_data, train
from duoseg.core import load_plugins
from duoseg.core.inference.score_files import class_names, overlays
from duoseg.core.inference.streaming import Options

VARIANTS = {"full schedule": [], "without step 1": [1], "without step 2": [2],
            "without step 3": [3]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="duoseg-ablation-"))
    preset = PRESETS["quick" if args.fast else "cpu"]
    registry = load_plugins()

    data = prepare_data(out / "data", preset, registry)
    results, predictions = {}, {}
    for variant, omit in VARIANTS.items():
        slug = variant.replace(" ", "_")
        run = train("two_stage", data, out / "runs" / slug,
                    [f"train.seconds={preset.seconds}", *preset.two_stage,
                     f"schedule.params.omit={omit}"],
                    device=args.device, registry=registry)  # fmt: skip
        folder = out / "predictions" / slug
        results[variant] = predict_and_evaluate(run, data, folder, Options(),
                                                device=args.device, registry=registry)  # fmt: skip
        predictions[variant] = folder

    classes = class_names(results["full schedule"])
    lines = ["| variant | " + " | ".join(classes) + " | mean |", "|---" * (len(classes) + 2) + "|"]
    for variant, result in results.items():
        dice = [f"{result['table']['dice'][s]['mean']:.4f}" for s in classes]
        lines.append(f"| {variant} | " + " | ".join(dice) + f" | {mean_dice(result):.4f} |")
    truth = sorted(data.test_source.glob("*_label.nii.gz"))[0]
    case = truth.name.removesuffix("_label.nii.gz")
    figure = overlays(truth, {v: p / truth.name for v, p in predictions.items()},
                      out / f"{case}_ablation.png", image=data.test_source / f"{case}_image.nii.gz",
                      planes=("axial",))  # fmt: skip
    table = "\n".join(lines)
    (out / "ablation.md").write_text(
        f"# Ablation (the paper's Fig. 2), Dice on {preset.test_cases} test phantom(s)\n\n"
        f"{table}\n\n![overlays]({figure.name})\n"
    )
    print(table)
    print(f"everything is under {out}")


if __name__ == "__main__":
    main()
