"""TorchIO's LabelSampler on one label volume: time to the first patch and peak RSS.

    python benchmarks/peer_torchio_sampler.py LABEL.nii [--size 64]

Prints one JSON line; needs the ``peers`` extra (torchio).
"""

from __future__ import annotations

import argparse
import json
import time


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited across exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("label")
    parser.add_argument("image")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    import torchio as tio

    before = peak_rss_mib()
    start = time.perf_counter()
    subject = tio.Subject(image=tio.ScalarImage(args.image), label=tio.LabelMap(args.label))
    sampler = tio.data.LabelSampler(args.size, label_name="label")
    patch = next(iter(sampler(subject, num_patches=1)))
    first = time.perf_counter() - start
    print(json.dumps({
        "first_patch_s": first,
        "patch_shape": list(patch["image"].shape),
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": before,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
