"""The paper's four-step schedule (``wang2018``, method ``two_stage``), its baseline
(``baseline_unet3d``, method ``resampled``) and a full-resolution patch network
(``fullres_unet3d``, method ``sliding_window``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, get_args

from duoseg.core import Component, ComponentRef, hookimpl
from duoseg.core.errors import ConfigError
from duoseg.core.interfaces.schedule import LossTerm, Schedule, Stage

PAPER_ITERATIONS = 200 * 16  # 200 epochs of 16 iterations per step
CoarseViews = Literal["subvolumes", "whole"]


def wang2018(
    *,
    iterations: int | Sequence[int] = PAPER_ITERATIONS,
    subvolume_sizes: Sequence[int] = (64, 128, 256),
    end_to_end_sizes: Sequence[int] | None = None,
    coarse_views: CoarseViews = "subvolumes",
    k: int = 9,
    stack_crop: Sequence[int] | None = None,
    batch_size: int = 1,
    lr: float = 1e-4,
    allow_padding: bool = True,
    omit: Sequence[int] = (),
    loss: str = "dice_weighted",
    loss_params: Mapping[str, Any] | None = None,
    uniform_fraction: float = 0.0,
    time_shares: Sequence[float] | None = None,
) -> Schedule:
    """The paper's Table 1. ``iterations`` per step (one number or four);
    ``omit`` drops any of steps 1-3 (the paper's Fig. 2 ablation); ``loss`` is the
    multi-class loss of both nets (the paper's Eq. 1 by default; "nothing stops using
    a more sophisticated loss", it says), built with ``loss_params`` (for instance
    ``{ literal = true }``: Eq. 1 exactly as printed). ``uniform_fraction`` of the
    subvolumes (steps 2-3) and stacks (step 4) are centred uniformly instead of
    class-balanced (the paper: 0), so both nets see the chest far from the heart.
    ``end_to_end_sizes`` are step 3's subvolume edges (default: ``subvolume_sizes``, as
    in the paper): step 3 runs Net2 on every slice of the subvolume with gradients, so
    Net1's step 2 may want more context than step 3 can afford. ``coarse_views`` is what
    Net1 sees in step 2: ``"subvolumes"`` (the paper: full-resolution subvolumes of
    ``subvolume_sizes``, area-downsampled to the coarse grid) or ``"whole"`` (whole
    volumes of the cache's coarse level, as in step 1: the whole field of view's
    context without reading it at full resolution; one volume per batch, its integer
    coarse label the target, and ``subvolume_sizes``, ``uniform_fraction`` and
    ``allow_padding`` then apply to step 3 only). ``time_shares`` (four numbers) split
    ``train.seconds`` between the steps (default: as their ``iterations``): Net1's steps
    on the coarse grid cost several times Net2's per iteration, so one list cannot
    say both how many and how long."""
    counts = [iterations] * 4 if isinstance(iterations, int) else list(iterations)
    if len(counts) != 4:
        raise ConfigError(f"schedule.params.iterations needs 1 or 4 numbers, got {list(counts)}")
    bad = sorted(set(omit) - {1, 2, 3})
    if bad:
        raise ConfigError(f"schedule.params.omit = {list(omit)}: only steps 1, 2, 3 may be omitted")
    if coarse_views not in get_args(CoarseViews):
        raise ConfigError(
            f'schedule.params.coarse_views = {coarse_views!r}: expected "subvolumes" or "whole"'
        )
    if k < 3 or k % 2 == 0:
        raise ConfigError(f"schedule.params.k = {k}: K must be odd and >= 3")
    sizes = _patch_sizes("subvolume_sizes", subvolume_sizes)
    joint_sizes = (
        sizes if end_to_end_sizes is None else _patch_sizes("end_to_end_sizes", end_to_end_sizes)
    )
    uniform = {"uniform_fraction": uniform_fraction} if uniform_fraction else {}
    patch_params = {"batch_size": batch_size, "allow_padding": allow_padding, **uniform}
    joint_patches = ComponentRef("class_balanced", {"sizes": joint_sizes, **patch_params})
    if coarse_views == "whole":
        coarse_kind, coarse_sampler, coarse_batch = "net1_coarse", ComponentRef("whole_coarse"), 1
    else:
        coarse_kind, coarse_batch = "net1_subvolume", batch_size
        coarse_sampler = ComponentRef("class_balanced", {"sizes": sizes, **patch_params})
    stack = {"k": k, "batch_size": batch_size, **({"crop": list(stack_crop)} if stack_crop else {}),
             **uniform}  # fmt: skip
    coarse = LossTerm("net1", loss, params=dict(loss_params or {}))
    roi = LossTerm("net1", "dice_foreground")
    fine = LossTerm("net2", loss, params=dict(loss_params or {}))
    stages = [
        Stage("1_localise", "net1_coarse", ComponentRef("whole_coarse"), ("net1",), (roi,),
              counts[0], freeze=("net2",), lr=lr),
        Stage("2_coarse", coarse_kind, coarse_sampler, ("net1",), (roi, coarse), counts[1],
              freeze=("net2",), lr=lr, batch_size=coarse_batch),
        Stage("3_end_to_end", "end_to_end", joint_patches, ("net1", "net2"), (coarse, fine),
              counts[2], lr=lr, batch_size=batch_size),
        Stage("4_fine", "net2_stacks", ComponentRef("axial_stack", stack), ("net2",), (fine,),
              counts[3], freeze=("net1",), lr=lr, batch_size=batch_size),
    ]  # fmt: skip
    if time_shares is not None:
        shares = _four("time_shares", time_shares)
        stages = [replace(s, time_share=share) for s, share in zip(stages, shares, strict=True)]
    kept = tuple(s for step, s in enumerate(stages, 1) if step not in omit)
    return Schedule("wang2018", "two_stage", kept)


def _four(key: str, values: Sequence[float]) -> list[float]:
    """``values`` as four floats, refused naming ``schedule.params.<key>`` otherwise."""
    listed = list(values)
    if len(listed) != 4:
        raise ConfigError(f"schedule.params.{key} = {listed}: expected four numbers, one a step")
    return [float(v) for v in listed]


def _patch_sizes(key: str, sizes: Sequence[int]) -> list[int]:
    """``sizes`` as a list; refused, naming ``schedule.params.<key>``, unless one or more
    positive voxel counts (checked with the schedule, not when its stage starts)."""
    listed = list(sizes)
    if not listed or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in listed):
        raise ConfigError(
            f"schedule.params.{key} = {listed}: expected one or more positive voxel counts"
        )
    return listed


def _patch_schedule(
    name: str,
    method: str,
    stage: str,
    *,
    iterations: int,
    subvolume_sizes: Sequence[int],
    batch_size: int,
    lr: float,
    loss: str,
    loss_params: Mapping[str, Any] | None,
    uniform_fraction: float,
) -> Schedule:
    """A schedule of one stage training ``unet3d`` on class-balanced patches, a share
    ``uniform_fraction`` of them centred uniformly instead."""
    params = {"sizes": list(subvolume_sizes), "batch_size": batch_size}
    if uniform_fraction:
        params["uniform_fraction"] = uniform_fraction
    patches = ComponentRef("class_balanced", params)
    term = LossTerm("unet3d", loss, params=dict(loss_params or {}))
    only = Stage(stage, "patches", patches, ("unet3d",), (term,), iterations, lr=lr,
                 batch_size=batch_size)  # fmt: skip
    return Schedule(name, method, (only,))


def baseline_unet3d(
    *,
    iterations: int = 4 * PAPER_ITERATIONS,
    subvolume_sizes: Sequence[int] = (64, 96),
    batch_size: int = 1,
    lr: float = 1e-4,
    loss: str = "dice_weighted",
    loss_params: Mapping[str, Any] | None = None,
    uniform_fraction: float = 0.0,
) -> Schedule:
    """The paper's comparison: ``unet3d`` on data resampled to 2 mm (method
    ``resampled``), trained with the same multi-class loss as ``wang2018`` (Eq. 1 by
    default, ``loss_params`` as there).

    ``subvolume_sizes`` are edges in voxels of the network's own grid
    (``train.baseline_spacing``, 2 mm): 64 and 96 voxels see 128 and 192 mm, most of a
    cardiac CT's field of view, whatever the data's resolution. The patches are read at
    full resolution and resampled to that grid (area for the image, majority for the
    label), as the whole volume is at prediction."""
    return _patch_schedule("baseline_unet3d", "resampled", "baseline", **locals())


def fullres_unet3d(
    *,
    iterations: int = 4 * PAPER_ITERATIONS,
    subvolume_sizes: Sequence[int] = (96, 128),
    batch_size: int = 1,
    lr: float = 1e-4,
    loss: str = "dice_weighted",
    loss_params: Mapping[str, Any] | None = None,
    uniform_fraction: float = 0.0,
) -> Schedule:
    """``unet3d`` on full-resolution patches (method ``sliding_window``, nnU-Net's
    3d_fullres recipe): edges in full-resolution voxels; predict with windows the size
    of the largest patch (``[method] params = { window = [...] }``)."""
    return _patch_schedule("fullres_unet3d", "sliding_window", "fullres", **locals())


@hookimpl
def duoseg_schedule() -> list[Component]:
    return [
        Component("wang2018", wang2018, "The paper's four training steps (Table 1)"),
        Component("baseline_unet3d", baseline_unet3d, "unet3d at 2 mm, the paper's baseline"),
        Component("fullres_unet3d", fullres_unet3d, "unet3d on full-resolution patches"),
    ]
