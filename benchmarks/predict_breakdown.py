"""Where the time of one ``duoseg predict`` goes, NIfTI in to NIfTI out.

    python benchmarks/predict_breakdown.py RUN_DIR IMAGE.nii.gz [--json OUT.json]
        [--method-option KEY=VALUE ...]

Runs the CLI in this process under cProfile (its overhead is per Python call: small
next to calls that each take milliseconds to seconds) and reports the cumulative time
of the functions that do each part: reading and normalising the volume, Net1, the
guidance's upsampling, Net2, the argmax, the wait for the writer thread and writing
the NIfTI file; "start-up" is the interpreter, imports and the CLI before the case is
read, "other" the rest. docs/inference.md shows a run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

PARTS = {  # part -> (file the function is in, function name)
    "read NIfTI": ("importers.py", "read_voxels"),
    "normalise": ("preprocessing.py", "normalise"),
    "Net1": ("unet.py", "_forward"),
    "upsample guidance": ("grid.py", "upsample_box"),
    "Net2": ("net2.py", "_forward"),
    "argmax": ("streaming.py", "most_probable"),
    "wait for the writer": ("streaming.py", "_written"),
    "write NIfTI": ("outputs.py", "_write_labels"),
}
CASE = ("predict.py", "predict_paths")


def cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    entries = stats.stats  # type: ignore[attr-defined]
    return sum(
        entry[3]
        for (path, _, function), entry in entries.items()
        if path.endswith(where[0]) and function == where[1]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    start = time.perf_counter()
    profile = cProfile.Profile()
    profile.enable()
    from duoseg.apps.cli import main as cli

    with tempfile.TemporaryDirectory() as out:
        options = [flag for item in args.method_option for flag in ("--method-option", item)]
        code = cli(["predict", str(args.run), str(args.image), f"{out}/labels.nii.gz", *options])
    profile.disable()
    total = time.perf_counter() - start
    if code:
        sys.exit(code)
    stats = pstats.Stats(profile)
    parts = {part: cumulative(stats, where) for part, where in PARTS.items()}
    parts["start-up"] = total - cumulative(stats, CASE)
    parts["other"] = total - sum(parts.values())
    for part, seconds in parts.items():
        print(f"{part:<20} {seconds:7.2f} s  {seconds / total:6.1%}")
    print(f"{'total':<20} {total:7.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"total_s": total, "parts_s": parts}, indent=1))


if __name__ == "__main__":
    main()
