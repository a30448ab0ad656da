r"""Gaussian-weighted overlapping windows, streamed down z.

The full-resolution patch networks of nnU-Net (3d_fullres) and MONAI
(``sliding_window_inference``) label a volume with overlapping windows whose outputs
are blended by an importance map; here nnU-Net's Gaussian,

.. math:: p(v) = \frac{\sum_w g(v - o_w)\, p_w(v)}{\sum_w g(v - o_w)},
   \qquad g(u) = \prod_{a} \exp\!\Big(-\frac{(u_a - s_a/2)^2}{2 (\sigma s_a)^2}\Big),

with :math:`o_w` a window's origin, :math:`s` its size and :math:`\sigma = 1/8`: nnU-Net's
weights, normalised to peak 1 with any zero raised to the smallest positive weight (its
floor). MONAI's ``sliding_window_inference`` blends with constant weights by default;
its ``mode="gaussian"`` floors every weight at :math:`\max(\min g, 10^{-3})`, so its
window corners weigh more than ours. nnU-Net and
MONAI hold the whole :math:`C \times Z \times Y \times X` sum in memory. Here windows are
processed one z-row (all windows sharing a z origin) at a time, and slices are handed
out as soon as no later row touches them, so the buffers span one window depth plus
the requested slab: memory is flat in the volume's depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from duoseg.core.accounting import network_cost
from duoseg.core.inference.streaming import whole_volume
from duoseg.core.interfaces.method import SlabPredictor
from duoseg.core.interfaces.network import SegmentationNetwork
from torch import Tensor

Reader = Callable[[tuple[int, int, int], tuple[int, int, int]], Tensor]
Forward = Callable[[Tensor], Tensor]


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Origins of windows of ``window`` voxels covering ``0..length`` with at least
    ``overlap`` (a fraction) between neighbours: first at 0, last at ``length - window``
    (a single window at 0 when the volume is not longer than it)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap = {overlap} must lie in [0, 1)")
    if length <= window:
        return [0]
    count = math.ceil((length - window) / (window * (1 - overlap))) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def gaussian_importance(size: Sequence[int], sigma_scale: float = 0.125) -> Tensor:
    """The separable Gaussian :math:`g` over a window of ``size``, peak 1, with nnU-Net's
    floor (weights that underflow to 0 raised to the smallest positive one, so no voxel
    gets zero weight); not MONAI's floor of 1e-3."""
    axes = [
        torch.exp(
            -0.5 * ((torch.arange(n, dtype=torch.float32) + 0.5 - n / 2) / (sigma_scale * n)) ** 2
        )
        for n in size
    ]
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights = weights / weights.max()
    return weights.clamp_min(float(weights[weights > 0].min()))


class StreamedWindows:
    """Class probabilities of a volume of ``shape`` from overlapping windows, slab by slab.

    ``read(origin, size)`` gives a window's input ``(c, *size)`` (padded where it leaves
    the volume); ``forward(x)`` maps a batch ``(b, c, *window)`` to class probabilities
    ``(b, classes, *window)``. :meth:`slices` must be called with consecutive slabs.
    """

    def __init__(
        self,
        shape: Sequence[int],
        window: Sequence[int],
        *,
        read: Reader,
        forward: Forward,
        classes: int,
        overlap: float = 0.5,
        batch: int = 1,
        sigma_scale: float = 0.125,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(window) != 3 or min(window) < 1:
            raise ValueError(f"window = {list(window)} must be three sizes >= 1")
        if batch < 1:
            raise ValueError(f"batch = {batch} must be >= 1")
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.window = (int(window[0]), int(window[1]), int(window[2]))
        self.read, self.forward, self.classes, self.batch = read, forward, classes, batch
        self.device = torch.device(device)
        self.rows = window_starts(self.shape[0], self.window[0], overlap)
        self.plane = [
            (y, x)
            for y in window_starts(self.shape[1], self.window[1], overlap)
            for x in window_starts(self.shape[2], self.window[2], overlap)
        ]
        self.importance = gaussian_importance(self.window, sigma_scale).to(self.device)
        self._next_row = 0
        self._base: int | None = None  # the first slice not yet handed out
        self._held = 0  # slices from _base on that hold sums (the buffers' valid planes)
        # Fixed buffers, reused for the whole volume: allocated once (first slab's needs),
        # never concatenated, so no slab holds two copies of them.
        self._sum = torch.zeros((classes, 0, *self.shape[1:]), device=self.device)
        self._weight = torch.zeros((0, *self.shape[1:]), device=self.device)

    @property
    def windows(self) -> int:
        """How many windows cover the volume."""
        return len(self.rows) * len(self.plane)

    def slices(self, z0: int, z1: int) -> Tensor:
        """Blended probabilities ``(classes, z1 - z0, y, x)`` of slices ``z0..z1``."""
        if self._base is None:  # a first slab may start late (a resumed output)
            self._base = z0
            self._next_row = sum(1 for s in self.rows if s + self.window[0] <= z0)
        if z0 != self._base or not z0 < z1 <= self.shape[0]:
            raise ValueError(f"slices({z0}, {z1}): expected the slab after {self._base}")
        rows = [z for z in self.rows[self._next_row :] if z < z1]
        if rows:
            self._hold(min(rows[-1] + self.window[0], self.shape[0]) - self._base)
        for z in rows:
            self._add_row(z)
        self._next_row += len(rows)
        depth = z1 - z0
        out = self._sum[:, :depth] / self._weight[:depth].clamp_min(1e-12)
        self._shift(depth)
        self._base = z1
        return out

    def _hold(self, depth: int) -> None:
        """Make the buffers hold sums for ``depth`` slices from ``_base`` on; new planes
        start at zero."""
        if depth > self._weight.shape[0]:  # only the first slab, or a deeper one
            planes = (depth, *self.shape[1:])
            bigger_sum = self._sum.new_zeros(self.classes, *planes)
            bigger_weight = self._weight.new_zeros(planes)
            bigger_sum[:, : self._held] = self._sum[:, : self._held]
            bigger_weight[: self._held] = self._weight[: self._held]
            self._sum, self._weight = bigger_sum, bigger_weight
        if depth > self._held:
            self._sum[:, self._held : depth] = 0
            self._weight[self._held : depth] = 0
            self._held = depth

    def _shift(self, depth: int) -> None:
        """Drop the first ``depth`` planes: move the held ones after them to the front,
        in blocks of at most ``depth`` planes so source and target never overlap."""
        kept = max(self._held - depth, 0)
        for start in range(0, kept, depth):
            stop = min(start + depth, kept)
            self._sum[:, start:stop] = self._sum[:, start + depth : stop + depth]
            self._weight[start:stop] = self._weight[start + depth : stop + depth]
        self._held = kept

    def _add_row(self, z: int) -> None:
        for first in range(0, len(self.plane), self.batch):
            origins = [(z, y, x) for y, x in self.plane[first : first + self.batch]]
            x = torch.stack([self.read(o, self.window) for o in origins]).to(self.device)
            probabilities = self.forward(x).float()
            for origin, p in zip(origins, probabilities, strict=True):
                self._accumulate(origin, p)

    def _accumulate(self, origin: tuple[int, int, int], probabilities: Tensor) -> None:
        """Add one window's weighted probabilities where it meets the volume and the
        slices not yet handed out."""
        assert self._base is not None
        source, target = [], []
        for axis, (o, n, w) in enumerate(zip(origin, self.shape, self.window, strict=True)):
            low = max(o, self._base if axis == 0 else 0)
            high = min(o + w, n)
            source.append(slice(low - o, high - o))
            shift = self._base if axis == 0 else 0
            target.append(slice(low - shift, high - shift))
        weight = self.importance[tuple(source)]
        self._sum[(slice(None), *target)] += probabilities[(slice(None), *source)] * weight
        self._weight[tuple(target)] += weight


class WindowSlabs(SlabPredictor):
    """Slabs of a :class:`StreamedWindows` blend over the whole volume."""

    def __init__(self, windows: StreamedWindows, network: SegmentationNetwork) -> None:
        super().__init__(whole_volume(windows.shape))
        self.windows, self.network = windows, network
        self.details["windows"] = windows.windows

    def depth(self, budget_mib: float) -> int:
        """Slices whose buffers fit beside one batch of windows' activations and the
        window depth they span: per voxel, the blend's sum and weight and the slab handed
        out (float32), the driver's argmax (int64) and float16 probabilities."""
        w = self.windows
        batch = (w.batch, self.network.in_channels, *w.window)
        activations = network_cost(self.network, batch).peak_activation_bytes
        per_slice = w.shape[1] * w.shape[2] * ((2 * w.classes + 1) * 4 + 8 + 2 * w.classes)
        free = budget_mib * 2**20 - activations - w.window[0] * per_slice
        return max(1, min(int(free // per_slice), w.shape[0]))

    def step(self, z0: int, z1: int) -> Tensor:
        return self.windows.slices(z0, z1)
