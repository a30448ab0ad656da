"""Process memory as Linux reports it, for the benchmarks that run in their own process."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def rss_mib(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` (now) in MiB. Unlike ``ru_maxrss``, the peak is
    not inherited across exec, so a child started from a big pytest process reads its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def spawned(job: Callable[..., T], *args: Any) -> T:
    """``job(*args)`` in a fresh spawned process (its result pickled back): its peak RSS
    is its own, and no torch thread pool is inherited - a forked child of a process
    whose OpenMP threads ran hangs in its first parallel region."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(job, args)


def measured(job: Callable[[], T]) -> tuple[T, float, float]:
    """``job()``'s result, seconds and working memory in MiB (peak RSS above the RSS when
    it started): call it inside the process that :func:`spawned` made, after loading."""
    start_rss, start = rss_mib("VmRSS"), time.perf_counter()
    value = job()
    return value, time.perf_counter() - start, rss_mib("VmHWM") - start_rss
