"""Peak RSS and first-patch latency of class-balanced sampling over a whole cache.

    python benchmarks/sampling_memory.py CACHE [--patches-per-case N] [--size 64]

Prints one JSON line. Run as its own process so ru_maxrss is this workload's.
"""

from __future__ import annotations

import argparse
import json
import time

from duoseg.core import load_plugins
from duoseg.core.cache import open_cache


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it is not inherited across exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("--patches-per-case", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    registry = load_plugins(entry_points=False)
    sampler = registry.build("sampler", "class_balanced", sizes=[args.size], seed=1)
    baseline = peak_rss_mib()
    first, start, drawn = [], time.perf_counter(), 0
    cache = open_cache(args.cache, registry)
    for number, case_id in enumerate(cache.cases()):
        opened = time.perf_counter()
        case = cache.case(case_id)
        sampler.sample(case, epoch=0, index=number * 1000)
        first.append(time.perf_counter() - opened)
        for index in range(1, args.patches_per_case):
            sampler.sample(case, epoch=0, index=number * 1000 + index)
        drawn += args.patches_per_case
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "cases": len(cache.cases()),
        "patches": drawn,
        "patches_per_s": drawn / elapsed,
        "first_patch_s_max": max(first),
        "first_patch_s_median": sorted(first)[len(first) // 2],
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_cache_mib": baseline,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
