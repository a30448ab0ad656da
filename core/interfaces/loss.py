"""The loss interface: class scores against a label map, 2D or 3D.

The public :meth:`SegmentationLoss.forward` validates shapes and labels and turns the
target into one-hot form; a subclass fills :meth:`SegmentationLoss._loss`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from duoseg.core.errors import InputShapeError
from torch import Tensor, nn

Inputs = Literal["logits", "probabilities"]


class SegmentationLoss(nn.Module):
    """Loss of class scores ``(b, C+1, [z,] y, x)`` against labels.

    ``inputs`` says what the scores are: ``"logits"`` (the networks' output; the
    loss applies the softmax) or ``"probabilities"`` (already softmaxed).
    The target is either integer class indices ``(b, [z,] y, x)`` (a singleton
    channel axis is accepted) or one-hot / soft labels shaped like the scores.
    """

    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, inputs: Inputs = "logits") -> None:
        super().__init__()
        if inputs not in ("logits", "probabilities"):
            raise ValueError(f"inputs must be 'logits' or 'probabilities', got {inputs!r}")
        self.inputs: Inputs = inputs

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        name = type(self).__name__
        if scores.dim() not in (4, 5) or scores.shape[1] < 2:
            raise InputShapeError(
                f"{name}: scores must be (batch, classes>=2, [z,] y, x), got shape "
                f"{tuple(scores.shape)}"
            )
        return self._loss(scores, self._one_hot(scores, target))

    def _one_hot(self, scores: Tensor, target: Tensor) -> Tensor:
        name = type(self).__name__
        classes = scores.shape[1]
        if target.is_floating_point() and target.shape == scores.shape:
            return target.to(scores.dtype)
        if target.dim() == scores.dim() and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != scores.shape[:1] + scores.shape[2:]:
            raise InputShapeError(
                f"{name}: target shape {tuple(target.shape)} does not match scores "
                f"{tuple(scores.shape)}; expected integer labels "
                f"{tuple(scores.shape[:1] + scores.shape[2:])} or one-hot {tuple(scores.shape)}"
            )
        if target.is_floating_point() or target.dtype == torch.bool:
            raise InputShapeError(f"{name}: integer labels expected, got dtype {target.dtype}")
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise InputShapeError(
                f"{name}: label value {bad} outside 0..{classes - 1} for {classes} score channels"
            )
        onehot = F.one_hot(target.long(), classes)
        return onehot.movedim(-1, 1).to(scores.dtype)

    def probabilities(self, scores: Tensor) -> Tensor:
        """Class probabilities from the scores, per ``inputs``."""
        return scores.softmax(1) if self.inputs == "logits" else scores

    def log_probabilities(self, scores: Tensor) -> Tensor:
        """Log class probabilities, computed stably from logits when possible."""
        if self.inputs == "logits":
            return scores.log_softmax(1)
        return scores.clamp_min(torch.finfo(scores.dtype).tiny).log()

    @abstractmethod
    def _loss(self, scores: Tensor, target: Tensor) -> Tensor:
        """The scalar loss of validated scores against a one-hot target of the same shape."""
