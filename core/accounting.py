"""FLOP and memory accounting of a network for a given input size.

Everything runs on the ``meta`` device: no weights are copied to memory and no
arithmetic is done, so asking what a 512x512x64 slab costs takes milliseconds.
Inference uses these figures to size slabs to a memory budget.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from duoseg.core.interfaces.network import SegmentationNetwork, Shape
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True, slots=True)
class NetworkCost:
    """What one forward pass of ``input_shape`` costs.

    ``peak_activation_bytes`` is the largest total size of the tensors alive at once
    during an inference (no-grad) forward, the input excluded: the working memory
    beyond the weights and the input.
    """

    input_shape: Shape
    output_shape: Shape
    parameters: int
    flops: int
    peak_activation_bytes: int

    @property
    def output_voxels(self) -> int:
        batch, _, *spatial = self.output_shape
        voxels = batch
        for size in spatial:
            voxels *= size
        return voxels

    @property
    def flops_per_output_voxel(self) -> float:
        return self.flops / self.output_voxels


class _LiveTensorBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Tracks the bytes of tensors created inside the mode that are still referenced."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        outputs = out if isinstance(out, tuple | list) else (out,)
        for index, tensor in enumerate(outputs):
            aliases = index < len(returns) and returns[index].alias_info is not None
            if isinstance(tensor, torch.Tensor) and not aliases:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        size = tensor.untyped_storage().nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(tensor, self._release, size)

    def _release(self, size: int) -> None:
        self.live -= size


def network_cost(
    network: SegmentationNetwork,
    input_shape: Shape,
    *,
    dtype: torch.dtype = torch.float32,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> NetworkCost:
    """Parameters, FLOPs and peak inference activation memory for ``input_shape``.

    ``forward`` replaces ``module(x)`` when the pass of interest is another method.
    """
    network.check_input_shape(input_shape)
    meta_net = copy.deepcopy(network).to(device="meta", dtype=dtype).eval()
    run = forward or (lambda module, x: module(x))
    x = torch.empty(input_shape, device="meta", dtype=dtype)
    flop_counter = FlopCounterMode(display=False)
    with torch.no_grad(), flop_counter:
        out = run(meta_net, x)
    live = _LiveTensorBytes()
    with torch.no_grad(), live:
        run(meta_net, x)
    return NetworkCost(
        input_shape=tuple(input_shape),
        output_shape=tuple(out.shape),
        parameters=sum(p.numel() for p in network.parameters()),
        flops=int(flop_counter.get_total_flops()),
        peak_activation_bytes=live.peak,
    )
