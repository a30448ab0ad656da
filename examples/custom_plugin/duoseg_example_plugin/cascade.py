"""A cascade, as a method of its own (nnU-Net's 3d_cascade_fullres, in miniature).

A ``coarse`` network labels the whole volume at the cache's coarse spacing; a ``fine``
3D network then labels full-resolution windows from the image and the coarse class
probabilities upsampled to the window. Nothing here touches duoseg's core: the method
declares its roles and stage kinds, gives the forward pass of each kind and a slab
predictor, and the engine does the rest (training loop, checkpoints, streaming, sinks).

Stage kinds (schedule ``cascade``)::

    coarse  the coarse network on whole coarse volumes
    fine    the fine network on full-resolution patches, the coarse network frozen
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from duoseg.core import (
    CacheCase,
    ComponentRef,
    ConfigError,
    LossTerm,
    Method,
    Model,
    Part,
    Schedule,
    SegmentationNetwork,
    SlabPredictor,
    Stage,
    TrainingContext,
)
from duoseg.core.data.grid import background, upsample_box
from duoseg.core.inference.windows import StreamedWindows, WindowSlabs
from duoseg.core.interfaces.sampler import IMAGE_PAD, read_padded
from torch import Tensor


@dataclass(frozen=True)
class CascadeOptions:
    """Prediction options of the cascade."""

    overlap: float = 0.5  # fraction shared by neighbouring windows
    batch: int = 2  # windows per forward pass

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap = {self.overlap} must lie in [0, 1)")
        if self.batch < 1:
            raise ValueError(f"batch = {self.batch} must be >= 1")


@torch.no_grad()
def coarse_probabilities(network: SegmentationNetwork, case: CacheCase, device: Any) -> Tensor:
    """The coarse network's class probabilities on the case's whole coarse volume."""
    image = np.asarray(case.coarse_image[...], dtype=np.float32)
    x = torch.as_tensor(image, device=device)[None, None]
    scores: Tensor = network.eval()(x)
    return scores.float().softmax(1)[0]


class Cascade(Method):
    """Coarse network -> full-resolution windows guided by its probabilities.

    Args:
        window: the fine network's window at prediction, in voxels (z, y, x).
    """

    roles = ("coarse", "fine")
    stage_kinds = ("coarse", "fine")
    final_kinds = ("fine",)  # after "coarse", the fine network is still untrained
    prediction_options = CascadeOptions

    def __init__(self, *, window: Sequence[int] = (64, 64, 64)) -> None:
        if len(window) != 3 or min(window) < 1:
            raise ConfigError(f"method.params.window = {list(window)} must be 3 sizes >= 1")
        self.window = (int(window[0]), int(window[1]), int(window[2]))

    def _check(
        self, networks: Mapping[str, SegmentationNetwork], schedule: Schedule | None
    ) -> None:
        classes = networks["fine"].out_channels
        if networks["fine"].in_channels != 1 + classes:
            raise ConfigError(
                f"networks.fine takes {networks['fine'].in_channels} input channels; the "
                f"cascade feeds it the image and {classes} coarse class probabilities "
                f"(in_channels = {1 + classes})"
            )

    def _forward(
        self, kind: str, batch: Mapping[str, Any], context: TrainingContext
    ) -> dict[str, list[Part]]:
        image, label = batch["image"], batch["label"]
        if kind == "coarse":
            image, label = context.augment(image, label, [IMAGE_PAD])
            return {"coarse": [(context.networks["coarse"](image), label)]}
        classes = context.preprocessing.classes
        size = tuple(image.shape[2:])
        guidance, outside = [], background(classes)
        for case_id, origin in zip(batch["case_id"], batch["origin"].tolist(), strict=True):
            case = context.cache.case(case_id)
            coarse = coarse_probabilities(context.networks["coarse"], case, context.device)
            guidance.append(upsample_box(coarse, case.meta.shape, origin, size, outside))
        x = torch.cat((image, torch.stack(guidance).to(image)), 1)
        x, label = context.augment(x, label, [IMAGE_PAD, *outside])
        return {"fine": [(context.networks["fine"](x), label)]}

    def _predictor(self, model: Model, case: CacheCase, options: Any) -> SlabPredictor:
        coarse = coarse_probabilities(model.networks["coarse"], case, model.device)
        fine, shape = model.networks["fine"], case.meta.shape
        outside = background(model.classes)

        def read(origin: tuple[int, int, int], size: tuple[int, int, int]) -> Tensor:
            image = read_padded(case.image, origin, size, IMAGE_PAD)
            pixels = torch.as_tensor(image, dtype=torch.float32, device=model.device)[None]
            return torch.cat((pixels, upsample_box(coarse, shape, origin, size, outside)))

        def forward(x: Tensor) -> Tensor:
            return fine(x).float().softmax(1)

        windows = StreamedWindows(
            shape, self.window, read=read, forward=forward, classes=model.classes,
            overlap=options.overlap, batch=options.batch, device=model.device,
        )  # fmt: skip
        return WindowSlabs(windows, fine)


def cascade(
    *,
    iterations: int | Sequence[int] = 200,
    subvolume_sizes: Sequence[int] = (64,),
    batch_size: int = 1,
    lr: float = 1e-3,
    loss: str = "dice_ce",
) -> Schedule:
    """Two stages: the coarse network on whole coarse volumes, then the fine one on
    class-balanced full-resolution patches with the coarse network frozen."""
    counts = [iterations] * 2 if isinstance(iterations, int) else list(iterations)
    patches = ComponentRef(
        "class_balanced", {"sizes": list(subvolume_sizes), "batch_size": batch_size}
    )
    stages = (
        Stage("coarse", "coarse", ComponentRef("whole_coarse"), ("coarse",),
              (LossTerm("coarse", loss),), counts[0], freeze=("fine",), lr=lr),
        Stage("fine", "fine", patches, ("fine",), (LossTerm("fine", loss),), counts[1],
              freeze=("coarse",), lr=lr, batch_size=batch_size),
    )  # fmt: skip
    return Schedule("cascade", "cascade", stages)
