"""Streamed sliding windows: the same blend as holding the whole volume, in bounded memory."""

from __future__ import annotations

import itertools

import pytest
import torch
from duoseg.core.inference.windows import StreamedWindows, gaussian_importance, window_starts

SHAPE = (23, 20, 17)
CLASSES = 3


def fake_network(x: torch.Tensor) -> torch.Tensor:
    """Probabilities that depend on the window's content and position inside it, so a
    wrong origin, weight or crop changes the blend."""
    _b, _, z, y, w = x.shape
    ramp = torch.linspace(0, 1, z)[:, None, None] + torch.linspace(0, 2, y)[None, :, None]
    logits = torch.stack([x[:, 0], x[:, 0] * ramp, -x[:, 0] + torch.linspace(0, 1, w)], 1)
    return logits.softmax(1)


def reader(volume: torch.Tensor):  # type: ignore[no-untyped-def]
    def read(origin, size):  # type: ignore[no-untyped-def]
        out = torch.full(size, -1.0)
        src = tuple(
            slice(max(o, 0), min(o + s, n))
            for o, s, n in zip(origin, size, volume.shape, strict=True)
        )
        dst = tuple(slice(a.start - o, a.stop - o) for a, o in zip(src, origin, strict=True))
        out[dst] = volume[src]
        return out[None]

    return read


def whole_blend(volume: torch.Tensor, window, overlap: float) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The textbook blend, MONAI-style: one C x Z x Y x X sum for the whole volume."""
    total = torch.zeros(CLASSES, *volume.shape)
    weight = torch.zeros(volume.shape)
    g = gaussian_importance(window)
    read = reader(volume)
    for z in window_starts(volume.shape[0], window[0], overlap):
        for y in window_starts(volume.shape[1], window[1], overlap):
            for x in window_starts(volume.shape[2], window[2], overlap):
                p = fake_network(read((z, y, x), window)[None])[0]
                box = tuple(
                    slice(o, min(o + w, n))
                    for o, w, n in zip((z, y, x), window, volume.shape, strict=True)
                )
                crop = tuple(slice(0, b.stop - b.start) for b in box)
                total[(slice(None), *box)] += p[(slice(None), *crop)] * g[crop]
                weight[box] += g[crop]
    return total / weight


@pytest.mark.parametrize("window", [(8, 8, 8), (8, 32, 6), (30, 12, 10)])
@pytest.mark.parametrize("depth", [1, 3, 23])
def test_streamed_slabs_equal_the_whole_volume_blend(window, depth) -> None:
    volume = torch.rand(SHAPE) * 2 - 1
    expected = whole_blend(volume, window, 0.5)
    windows = StreamedWindows(SHAPE, window, read=reader(volume), forward=fake_network,
                              classes=CLASSES, overlap=0.5, batch=3)  # fmt: skip
    slabs, held = [], []
    for z0 in range(0, SHAPE[0], depth):
        slabs.append(windows.slices(z0, min(z0 + depth, SHAPE[0])))
        held.append((windows._held, windows._sum.shape[1]))
    torch.testing.assert_close(torch.cat(slabs, 1), expected, atol=1e-5, rtol=1e-5)
    # What stays held between slabs is at most one window deep, the buffers one window
    # plus one slab: flat in the volume's depth.
    assert max(h for h, _ in held) <= window[0]
    assert max(c for _, c in held) <= window[0] + depth


def test_a_stream_may_start_late_as_a_resumed_output_does() -> None:
    volume = torch.rand(SHAPE)
    expected = whole_blend(volume, (8, 8, 8), 0.5)
    windows = StreamedWindows(SHAPE, (8, 8, 8), read=reader(volume), forward=fake_network,
                              classes=CLASSES)  # fmt: skip
    late = torch.cat([windows.slices(z, min(z + 5, SHAPE[0])) for z in range(10, SHAPE[0], 5)], 1)
    torch.testing.assert_close(late, expected[:, 10:], atol=1e-5, rtol=1e-5)


def test_slabs_out_of_order_are_refused() -> None:
    windows = StreamedWindows(SHAPE, (8, 8, 8), read=reader(torch.rand(SHAPE)),
                              forward=fake_network, classes=CLASSES)  # fmt: skip
    windows.slices(0, 4)
    with pytest.raises(ValueError, match=r"slices\(6, 8\): expected the slab after 4"):
        windows.slices(6, 8)


@pytest.mark.parametrize(
    ("length", "window", "overlap"), [(100, 32, 0.5), (33, 32, 0.25), (5, 8, 0.5)]
)
def test_window_starts_cover_the_axis_with_at_least_the_overlap(length, window, overlap) -> None:
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] == max(length - window, 0)
    assert all(b - a <= window * (1 - overlap) for a, b in itertools.pairwise(starts))


def test_bad_window_settings_are_refused_with_their_values() -> None:
    with pytest.raises(ValueError, match=r"overlap = 1.0 must lie in \[0, 1\)"):
        window_starts(10, 4, 1.0)
    with pytest.raises(ValueError, match=r"window = \[8, 0, 8\] must be three sizes >= 1"):
        StreamedWindows(SHAPE, (8, 0, 8), read=reader(torch.rand(SHAPE)), forward=fake_network,
                        classes=CLASSES)  # fmt: skip


def test_the_gaussian_peaks_at_the_centre_and_is_positive_everywhere() -> None:
    g = gaussian_importance((9, 8, 7))
    assert float(g.max()) == pytest.approx(1.0, abs=0.05) and float(g.min()) > 0
    assert g[4, 3, 3] == g.max() and g[0, 0, 0] == g.min()
