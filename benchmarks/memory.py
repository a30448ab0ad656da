"""Process memory as Linux reports it, for the benchmarks that run in their own process."""

from __future__ import annotations


def rss_mib(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` (now) in MiB. Unlike ``ru_maxrss``, the peak is
    not inherited across exec, so a child started from a big pytest process reads its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")
