"""Process memory as Linux reports it, for the benchmarks that run in their own process."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rss_mib(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` (now) in MiB. Unlike ``ru_maxrss``, the peak is
    not inherited across exec, so a child started from a big pytest process reads its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_forked(job: Callable[[], Any]) -> tuple[Any, float, float]:
    """``job()`` in a forked child: its result (pickled back), seconds, and working memory
    in MiB (peak RSS above the RSS the child started with; fork resets the peak), so one
    measurement's peak does not hide another's."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.pickle"
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run, save, report, exit without cleanup
            status = 1
            try:
                start_rss, start = rss_mib("VmRSS"), time.perf_counter()
                value = job()
                figures = [time.perf_counter() - start, rss_mib("VmHWM") - start_rss]
                result.write_bytes(pickle.dumps(value))
                os.write(write, json.dumps(figures).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        if not text:
            raise RuntimeError("the forked measurement failed (see its traceback above)")
        seconds, working = json.loads(text)
        return pickle.loads(result.read_bytes()), seconds, working
