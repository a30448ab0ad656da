"""Print the figures of a pytest-benchmark JSON file as tables.

python benchmarks/summarize.py out.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(path: Path) -> None:
    runs = json.loads(path.read_text())
    machine = runs.get("machine_info", {})
    print(f"# {path.name}: {machine.get('cpu', {}).get('brand_raw', '?')}")
    timings = {}
    for bench in runs["benchmarks"]:
        info = bench.get("extra_info", {})
        timings[bench["name"]] = bench["stats"]["min"]
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        print(f"{bench['name']}: min {bench['stats']['min']:.3f} s; {figures}")
    stack = timings.get("test_net2_stack_against_separate_calls[stack]")
    separate = timings.get("test_net2_stack_against_separate_calls[separate]")
    if stack and separate:
        ratio = next(
            b["extra_info"]["flop_ratio_separate_over_stack"]
            for b in runs["benchmarks"]
            if b["name"].endswith("[stack]")
        )
        speedup = separate / stack
        print(
            f"net2 stack speedup {speedup:.2f}x vs FLOP ratio {ratio:.2f}x "
            f"({speedup / ratio:.0%} of the FLOP ratio)"
        )


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        summarize(Path(argument))
