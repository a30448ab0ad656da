from __future__ import annotations

import pytest
import torch
from duoseg.core import InputShapeError, Registry

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAMES = ["affine", "flip", "elastic"]


def batch(device: str, depth: int = 12, label_depth: int | None = None):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, depth, 16, 20, generator=generator).to(device) * 2 - 1
    label = torch.randint(0, 8, (2, label_depth or depth, 16, 20), generator=generator).to(device)
    return image, label


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_labels_stay_labels_and_images_stay_in_range(registry: Registry, name, device) -> None:
    image, label = batch(device)
    out_image, out_label = registry.build("augmentation", name)(
        image, label, torch.Generator().manual_seed(1)
    )
    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert out_label.dtype == label.dtype and set(out_label.unique().tolist()) <= set(range(8))
    assert out_image.min() >= -1 - 1e-5 and out_image.max() <= 1 + 1e-5


def test_an_identity_affine_changes_nothing(registry: Registry) -> None:
    image, label = batch("cpu")
    identity = registry.build(
        "augmentation", "affine", degrees=0.0, translate=0.0, shear=0.0, scale=(1.0, 1.0)
    )
    out_image, out_label = identity(image, label, torch.Generator())
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_label, label)


def test_a_flip_moves_image_and_label_together(registry: Registry) -> None:
    image, _ = batch("cpu")
    label = (image > 0).long()[:, 0]
    out_image, out_label = registry.build("augmentation", "flip", axes=["x"])(
        image, label, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close((out_image > 0).long()[:, 0], out_label)


def test_bad_parameters_are_explained(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"probability must lie in \[0, 1\], got 2"):
        registry.build("augmentation", "flip", probability=2)
    with pytest.raises(InputShapeError, match=r"flip axes must be among z, y, x, got \['w'\]"):
        registry.build("augmentation", "flip", axes=["w"])


@pytest.mark.parametrize("in_plane", [False, True])
def test_each_channel_is_filled_with_its_own_value_outside_the_volume(
    registry: Registry, in_plane: bool
) -> None:
    """Guidance stacked onto the image moves with it and reads as background outside."""
    image = torch.stack((torch.full((2, 6, 16, 20), 0.3), torch.full((2, 6, 16, 20), 0.7)), 1)
    label = torch.ones((2, 1 if in_plane else 6, 16, 20), dtype=torch.long)
    shift = registry.build("augmentation", "affine", degrees=0, shear=0, scale=(0.5, 0.5),
                           translate=0)  # fmt: skip
    moved, labels = shift(image, label, torch.Generator().manual_seed(0), fill=[-1.0, 0.25])
    outside = labels == 0  # zoomed out by 2: the border comes from past the volume
    if in_plane:
        outside = outside.expand(-1, 6, -1, -1)
    assert outside.float().mean() > 0.3
    corner = (
        (slice(None), slice(None), slice(None), 0, 0)
        if in_plane
        else (slice(None),) * 2 + (0, 0, 0)
    )
    torch.testing.assert_close(moved[corner][:, 0], torch.full_like(moved[corner][:, 0], -1.0))
    torch.testing.assert_close(moved[corner][:, 1], torch.full_like(moved[corner][:, 1], 0.25))
