"""The paper's recipe as the trainer runs it (issue 12): Net2's guidance stays aligned
with image and label under augmentation, Net1 sees every case at the cache's coarse
spacing, batches of case-shaped samples are refused up front, and the baseline's patch
sizes count voxels of its own grid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from duoseg.core import ConfigError, SegmentationNetwork, load_plugins
from duoseg.core.config import load_config
from duoseg.core.data.cache import open_cache
from duoseg.core.data.cache_build import build_cache
from duoseg.core.data.grid import grid_shape
from duoseg.core.inference.sinks import MemorySink
from duoseg.core.inference.streaming import Options, predict_case
from duoseg.core.interfaces.method import Model
from duoseg.core.records.preprocessing import Level
from duoseg.core.training.checkpoint import TrainState
from duoseg.core.training.trainer import Trainer, config_as_dict
from duoseg.phantoms import PhantomCase, make_case, write_case
from duoseg.plugins.methods.two_stage import TwoStage
from duoseg.plugins.metrics import Dice
from torch import Tensor

CLASSES = 8  # background + the seven MM-WHS structures
SPATIAL = ("affine", "flip", "elastic")


def phantom_with(
    spacing: float, number: int, size: tuple[int, int, int], binary: bool
) -> PhantomCase:
    """A phantom case with isotropic ``spacing``; ``binary``: its image is the foreground
    itself (+1000 HU inside the heart, -1000 outside), so an oracle can read the label."""
    case = make_case(11, number, "ct", size)
    image = np.where(case.label > 0, 1000, -1000).astype(np.int16) if binary else case.image
    return replace(case, image=image, spacing=(spacing,) * 3)


def build(tmp: Path, cases: list[PhantomCase], levels: dict[str, float]) -> Path:
    source = tmp / "src"
    source.mkdir()
    for case in cases:
        write_case(case, source)
    registry = load_plugins()
    store = registry.build("store", "zarr", chunks=(8, 32, 32))
    build_cache(source, tmp / "cache.zarr", importer=registry.build("importer", "mmwhs"),
                store=store, levels=[Level(n, t) for n, t in levels.items()])  # fmt: skip
    return tmp / "cache.zarr"


def make_trainer(tmp: Path, cache: Path, text: str) -> Trainer:
    path = tmp / "config.toml"
    path.write_text(text)
    config = load_config(path, [f'data.cache="{cache}"'])
    return Trainer(
        config, load_plugins(), tmp / "run", source=str(path), raw_config=config_as_dict(config)
    )


# ---------------------------------------------------------------- 1: aligned guidance


class OracleNet1(SegmentationNetwork):
    """Net1 that knows the answer: the foreground is where the binary image is bright."""

    def __init__(self) -> None:
        super().__init__(1, CLASSES)

    def _forward(self, x: Tensor) -> Tensor:
        foreground = ((x + 1) / 2).clamp(1e-6, 1 - 1e-6)
        scores = x.new_full((x.shape[0], CLASSES, *x.shape[2:]), -30.0)
        scores[:, 0], scores[:, 1] = (1 - foreground[:, 0]).log(), foreground[:, 0].log()
        return scores


class GuidanceEcho(SegmentationNetwork):
    """A Net2 whose scores are its guidance: class 1 wherever Net1's foreground is."""

    def __init__(self, in_channels: int, k: int) -> None:
        super().__init__(in_channels, CLASSES)
        self.k = k

    def _forward(self, x: Tensor) -> Tensor:
        guidance = x[:, 1] if self.in_channels == 2 else 1 - x[:, 1]
        half = self.k // 2
        foreground = guidance[:, half : guidance.shape[1] - half]
        scores = x.new_full((x.shape[0], CLASSES, *foreground.shape[1:]), -30.0)
        scores[:, 0], scores[:, 1] = 10 * (1 - foreground), 10 * foreground
        return scores


ALIGNED = """
seed = 5
[networks.net1]
component = "net1"
params = {{ base_width = 4 }}
[networks.net2]
component = "net2"
params = {{ base_width = 4, k = 3, guidance = "{guidance}" }}
[schedule]
component = "wang2018"
params = {{ iterations = 1, subvolume_sizes = [32], k = 3, stack_crop = [48, 48], batch_size = 6 }}
[[augmentations]]
component = "{augmentation}"
"""


@pytest.fixture(scope="module")
def binary_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Foreground-coded phantoms at 2 mm with a 2 mm coarse level: Net1's grid is the
    full-resolution grid, so any misalignment is the pipeline's, not resampling's."""
    tmp = tmp_path_factory.mktemp("aligned")
    cases = [phantom_with(2.0, n, (64, 64, 40), binary=True) for n in range(2)]
    return build(tmp, cases, {"coarse": 2.0})


def foreground_dice(parts: list[tuple[Tensor, Tensor]]) -> float:
    """Dice of Net2's echoed guidance against the label's foreground, interpolation aside:
    voxels on the label's boundary (a non-uniform 3x3x3 neighbourhood), where linear
    guidance and nearest-neighbour labels may differ by a voxel, are left out."""
    predicted, truth = [], []
    for scores, label in parts:
        foreground = (label > 0).float()[:, None]
        uniform = F.max_pool3d(foreground, 3, 1, 1) == -F.max_pool3d(-foreground, 3, 1, 1)
        predicted.append(scores.argmax(1)[uniform[:, 0]] > 0)
        truth.append(label[uniform[:, 0]] > 0)
    return float(Dice().per_class(torch.cat(predicted), torch.cat(truth), 2)[0])


@pytest.mark.parametrize("guidance", ["foreground", "probabilities"])
@pytest.mark.parametrize("augmentation", SPATIAL)
def test_net2_guidance_stays_aligned_with_the_label_under_augmentation(
    binary_cache, tmp_path, guidance, augmentation
) -> None:
    trainer = make_trainer(
        tmp_path, binary_cache, ALIGNED.format(guidance=guidance, augmentation=augmentation)
    )
    in_channels = trainer.networks["net2"].in_channels
    trainer.networks = {"net1": OracleNet1(), "net2": GuidanceEcho(in_channels, k=3)}
    feeding_net2 = [s for s in trainer.schedule.stages if "net2" in (t.network for t in s.losses)]
    assert [s.kind for s in feeding_net2] == ["end_to_end", "net2_stacks"]
    for stage in feeding_net2:
        batch = next(trainer._batches(stage, TrainState()))
        with torch.no_grad():
            outputs = trainer._forward(stage, batch, torch.Generator().manual_seed(3))
        assert foreground_dice(outputs["net2"]) >= 0.99, (stage.name, augmentation)


def test_validation_and_inference_guidance_is_aligned(binary_cache) -> None:
    cache = open_cache(binary_cache)
    model = Model(
        {"net1": OracleNet1(), "net2": GuidanceEcho(2, k=3)},
        cache.preprocessing,
        torch.device("cpu"),
        TwoStage(),
    )
    for case_id in cache.cases():
        case = cache.case(case_id)
        sink = MemorySink()
        predict_case(model, case, sink, Options(memory_budget_mib=1))
        truth = case.label[...] > 0  # type: ignore[index]
        assert Dice().per_class(sink.labels > 0, truth, 2)[0] >= 0.99


# ---------------------------------------------------------------- 3: one coarse grid per case

MIXED = """
seed = 1
[networks.net1]
component = "net1"
params = { base_width = 4 }
[networks.net2]
component = "net2"
params = { base_width = 4, k = 3 }
[schedule]
component = "wang2018"
params = { iterations = 1, subvolume_sizes = [64], k = 3, stack_crop = [32, 32], batch_size = 2 }
"""


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's example: cases at 0.3 and 0.55 mm (mean 0.425), a 3 mm coarse level."""
    tmp = tmp_path_factory.mktemp("mixed")
    cases = [phantom_with(s, n, (64, 64, 64), binary=False) for n, s in enumerate((0.3, 0.55))]
    return build(tmp, cases, {"coarse": 3.0, "baseline": 2.0})


def net1_inputs(trainer: Trainer) -> list[tuple[int, ...]]:
    seen: list[tuple[int, ...]] = []
    trainer.networks["net1"].register_forward_pre_hook(
        lambda _, args: seen.append(tuple(args[0].shape[2:]))
    )
    return seen


@pytest.mark.slow
def test_net1_sees_every_case_at_the_coarse_spacing_in_every_step(mixed_cache, tmp_path) -> None:
    trainer = make_trainer(tmp_path, mixed_cache, MIXED)
    seen = net1_inputs(trainer)
    spacing = {c: trainer.metas[c].spacing[0] for c in trainer.training_cases}
    assert sorted(spacing.values()) == pytest.approx([0.3, 0.55])
    for stage in trainer.schedule.stages:
        for _, batch in zip(range(3), trainer._batches(stage, TrainState()), strict=False):
            seen.clear()
            with torch.no_grad():
                trainer._forward(stage, batch, torch.Generator().manual_seed(0))
            cases = batch["case_id"]
            if stage.kind == "net2_stacks":  # Net1 ran (once per case) on the cached coarse level
                assert set(seen) <= {trainer.metas[c].coarse.shape for c in cases}
                continue
            for case_id in cases:
                meta = trainer.metas[case_id]
                if stage.kind == "net1_coarse":
                    grid, full = meta.coarse.shape, meta.shape
                else:
                    full = tuple(batch["image"].shape[2:])
                    grid = grid_shape(full, meta.spacing, 3.0)
                assert grid in seen, (stage.name, case_id, grid, seen)
                net1_spacing = np.asarray(full) * meta.spacing[0] / np.asarray(grid)
                # The figures for the mean-spacing grid: 2.13 and 3.91 mm.
                assert np.all(np.abs(net1_spacing - 3.0) <= 0.25), (stage.name, net1_spacing)
    cache = open_cache(mixed_cache)
    for case_id in cache.cases():  # inference: the cached coarse level, at 3 mm
        meta = cache.case(case_id).meta
        net1_spacing = np.asarray(meta.shape) * meta.spacing[0] / np.asarray(meta.coarse.shape)
        assert np.all(np.abs(net1_spacing - 3.0) <= 0.25), (case_id, net1_spacing)


# ---------------------------------------------------------------- 7: batches of case shapes


def test_batches_of_whole_slices_from_cases_of_different_sizes_are_refused(tmp_path) -> None:
    cache = build(
        tmp_path,
        [phantom_with(0.5, 0, (64, 64, 32), False), phantom_with(0.5, 1, (48, 40, 32), False)],
        {"coarse": 3.0},
    )
    text = MIXED.replace("stack_crop = [32, 32], ", "")
    with pytest.raises(ConfigError) as caught:
        make_trainer(tmp_path, cache, text)
    message = str(caught.value)
    for part in ("schedule.stages[3]", "'4_fine'", "batch_size = 2", "'axial_stack'",
                 "(3, 64, 64)", "(3, 40, 48)", "crop"):  # fmt: skip
        assert part in message, message
    make_trainer(tmp_path, cache, MIXED)  # with a crop every stack has one shape


# ---------------------------------------------------------------- 8: the baseline's own grid

BASELINE = """
seed = 4
[networks.unet3d]
component = "unet3d"
params = { base_width = 4 }
[schedule]
component = "baseline_unet3d"
params = { iterations = 1, subvolume_sizes = [24], batch_size = 2 }
"""


def test_baseline_patches_count_voxels_of_its_own_grid(mixed_cache, tmp_path) -> None:
    trainer = make_trainer(tmp_path, mixed_cache, BASELINE)
    (stage,) = trainer.schedule.stages
    seen: list[tuple[int, ...]] = []
    trainer.networks["unet3d"].register_forward_pre_hook(
        lambda _, args: seen.append(tuple(args[0].shape[2:]))
    )
    for _, batch in zip(range(4), trainer._batches(stage, TrainState()), strict=False):
        # 24 voxels of 2 mm: 48 mm of context, whether the case is at 0.3 or 0.55 mm.
        assert tuple(batch["image"].shape[2:]) == (24, 24, 24)
        assert tuple(batch["label"].shape[1:]) == (24, 24, 24)
        with torch.no_grad():
            trainer._forward(stage, batch, torch.Generator().manual_seed(0))
    assert seen and all(s == (24, 24, 24) for s in seen)


def test_a_sampler_that_cannot_read_levels_refuses_the_baseline_grid(mixed_cache) -> None:
    sampler = load_plugins().build("sampler", "axial_stack", k=3)
    sampler.level = "baseline"
    case = open_cache(mixed_cache).case(open_cache(mixed_cache).cases()[0])
    with pytest.raises(Exception, match=r"AxialStackSampler cannot draw .* level 'baseline'"):
        sampler.sample(case, epoch=0, index=0)
