"""TorchIO's LabelSampler on one label volume: time to the first patch and peak RSS.

    python benchmarks/peer_torchio_sampler.py LABEL.nii [--size 64]

Prints one JSON line; needs the ``peers`` extra (torchio).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

from benchmarks.memory import rss_mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("label")
    parser.add_argument("image")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    import torchio as tio

    before = rss_mib()
    start = time.perf_counter()
    subject = tio.Subject(image=tio.ScalarImage(args.image), label=tio.LabelMap(args.label))
    sampler = tio.data.LabelSampler(args.size, label_name="label")
    patch = next(iter(sampler(subject, num_patches=1)))
    first = time.perf_counter() - start
    print(json.dumps({
        "first_patch_s": first,
        "patch_shape": list(patch["image"].shape),
        "peak_rss_mib": rss_mib(),
        "rss_before_mib": before,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
