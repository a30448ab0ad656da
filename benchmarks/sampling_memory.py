"""Peak RSS and first-patch latency of class-balanced sampling over a whole cache.

    python benchmarks/sampling_memory.py CACHE [--patches-per-case N] [--size 64]

Prints one JSON line. Run as its own process so ru_maxrss is this workload's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

from duoseg.core import load_plugins
from duoseg.core.data.cache import open_cache

from benchmarks.memory import rss_mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("--patches-per-case", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    registry = load_plugins(entry_points=False)
    sampler = registry.build("sampler", "class_balanced", sizes=[args.size], seed=1)
    baseline = rss_mib()
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
        "peak_rss_mib": rss_mib(),
        "rss_before_cache_mib": baseline,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
