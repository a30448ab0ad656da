"""The network interface: (batch, channels, z, y, x) in, class scores out.

Subclasses build their layers and fill :meth:`SegmentationNetwork._forward`; the
public :meth:`forward` checks the input against the network's contract first, so a
wrong shape fails with a message that names the value and the limit instead of an
opaque convolution error deep inside.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from duoseg.core.errors import InputShapeError
from torch import Tensor, nn

Shape = tuple[int, ...]


class SegmentationNetwork(nn.Module):
    """A network mapping (b, in_channels, z, y, x) to (b, out_channels, z', y, x) scores.

    Outputs are unnormalised class scores (logits); losses and inference apply the
    softmax, which keeps cross-entropy terms and bf16 autocast numerically stable.
    """

    def __init__(self, in_channels: int, out_channels: int, *, channels_last: bool = False):
        super().__init__()
        if in_channels < 1 or out_channels < 2:
            raise InputShapeError(
                f"{type(self).__name__}: in_channels must be >= 1 and out_channels >= 2 "
                f"(background + classes), got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        self.check_input_shape(tuple(x.shape))
        if not x.is_floating_point():
            raise InputShapeError(
                f"{type(self).__name__}: input must be floating point, got {x.dtype}"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self._forward(x)

    @abstractmethod
    def _forward(self, x: Tensor) -> Tensor:
        """Compute the class scores of a validated input."""

    def check_input_shape(self, shape: Shape) -> None:
        """Raise :class:`InputShapeError` unless ``shape`` is a valid input shape."""
        name = type(self).__name__
        if len(shape) != 5:
            raise InputShapeError(
                f"{name} expects a 5-D tensor (batch, channels, z, y, x), got shape {shape}"
            )
        if shape[1] != self.in_channels:
            raise InputShapeError(
                f"{name} expects {self.in_channels} input channel(s), got {shape[1]} "
                f"(shape {shape})"
            )
        if min(shape[2:]) < 1:
            raise InputShapeError(f"{name}: every spatial size must be >= 1, got shape {shape}")

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape :meth:`forward` returns for ``input_shape``."""
        self.check_input_shape(input_shape)
        return (input_shape[0], self.out_channels, *input_shape[2:])

    def example_input_shape(self, batch: int = 1) -> Shape:
        """A small valid input shape, for tests and accounting."""
        return (batch, self.in_channels, 16, 16, 16)

    def use_channels_last(self, enabled: bool = True) -> SegmentationNetwork:
        """Store convolution weights and activations channels-last (NDHWC / NHWC), or not.

        Channels-last is faster for 3D convolutions on CPU (oneDNN) and for tensor
        cores on GPU. State dicts are interchangeable between the two layouts.
        """
        formats = {
            5: torch.channels_last_3d if enabled else torch.contiguous_format,
            4: torch.channels_last if enabled else torch.contiguous_format,
        }
        for param in self.parameters():
            if param.dim() in formats:
                param.data = param.data.contiguous(memory_format=formats[param.dim()])
        self.channels_last = enabled
        return self
