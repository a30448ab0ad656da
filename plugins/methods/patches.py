"""What the single-network methods share: one 3D network trained on patches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duoseg.core.interfaces.method import Method, Part, TrainingContext
from duoseg.core.interfaces.sampler import IMAGE_PAD


class PatchNetworkMethod(Method):
    """One network, role ``unet3d``, trained on labelled patches (stage kind ``patches``)."""

    roles = ("unet3d",)
    stage_kinds = ("patches",)

    def _forward(
        self, kind: str, batch: Mapping[str, Any], context: TrainingContext
    ) -> dict[str, list[Part]]:
        image, label = context.augment(batch["image"], batch["label"], [IMAGE_PAD])
        return {"unet3d": [(context.networks["unet3d"](image), label)]}
