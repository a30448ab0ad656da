"""The built-in methods: the two-stage model, the resampled baseline, sliding windows."""

from __future__ import annotations

from duoseg.core import Component, hookimpl

from .resampled import Resampled
from .sliding_window import SlidingWindow
from .two_stage import TwoStage


@hookimpl
def duoseg_method() -> list[Component]:
    return [
        Component("two_stage", TwoStage, "Net1 -> dynamic tile -> Net2 (Wang et al. 2018)"),
        Component("resampled", Resampled, "A 3D network at 2 mm, B-spline upsampled (baseline)"),
        Component(
            "sliding_window", SlidingWindow, "A full-resolution 3D network on Gaussian windows"
        ),
    ]
