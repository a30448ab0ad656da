"""The augmentation contract."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from duoseg.core.errors import InputShapeError
from duoseg.core.interfaces.augmentation import Augmentation
from duoseg.core.registry import Registry
from duoseg.testing.suite import (
    ComponentSuite,
)


class AugmentationConformance(ComponentSuite):
    """The same generator state gives the same result; image and label keep shape and
    dtype, for volumes and for K-slice stacks with a central label; labels keep to the
    values they had (and background); each image channel reads its own ``fill``."""

    kind = "augmentation"
    label_set: ClassVar[tuple[int, ...]] = (0, 3, 7)  # not 0..n: labels must not be made up

    @pytest.fixture
    def augmentation(self, registry: Registry, component_name: str) -> Augmentation:
        augmentation: Augmentation = self.build(registry, component_name)
        return augmentation

    def batch(self, stack: bool = False, channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (2, c, z, 12, 10) in [-1, 1]; label (2, z or 1, 12, 10) from ``label_set``."""
        generator = torch.Generator().manual_seed(0)
        depth = 5 if stack else 6
        image = torch.rand(2, channels, depth, 12, 10, generator=generator) * 2 - 1
        shape = (2, 1 if stack else depth, 12, 10)
        index = torch.randint(0, len(self.label_set), shape, generator=generator)
        return image, torch.tensor(self.label_set)[index]

    def test_is_an_augmentation(self, augmentation: Augmentation) -> None:
        assert isinstance(augmentation, Augmentation)

    def test_the_same_generator_gives_the_same_result(self, augmentation: Augmentation) -> None:
        image, label = self.batch()
        before = image.clone(), label.clone()
        first = augmentation(image, label, torch.Generator().manual_seed(5))
        second = augmentation(image, label, torch.Generator().manual_seed(5))
        torch.testing.assert_close(first, second)
        torch.testing.assert_close((image, label), before)  # inputs are not modified

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_image_and_label_keep_shape_and_dtype(
        self, augmentation: Augmentation, stack: bool
    ) -> None:
        image, label = self.batch(stack)
        out_image, out_label = augmentation(image, label, torch.Generator().manual_seed(1))
        assert (out_image.shape, out_image.dtype) == (image.shape, image.dtype)
        assert (out_label.shape, out_label.dtype) == (label.shape, label.dtype)
        assert torch.isfinite(out_image).all(), "non-finite image values"

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_labels_keep_to_the_original_label_set(
        self, augmentation: Augmentation, stack: bool
    ) -> None:
        image, label = self.batch(stack)
        for seed in range(3):
            _, out = augmentation(image, label, torch.Generator().manual_seed(seed))
            made_up = set(out.flatten().tolist()) - set(self.label_set)
            assert not made_up, f"labels {sorted(made_up)} not in the input's {self.label_set}"

    @pytest.mark.parametrize("stack", [False, True], ids=["volume", "stack"])
    def test_each_channel_reads_its_own_fill(self, augmentation: Augmentation, stack: bool) -> None:
        """Channels constant at their fill value stay so, wherever voxels come from."""
        _, label = self.batch(stack)
        fill = [0.25, -0.5]
        image = torch.tensor(fill).reshape(1, 2, 1, 1, 1).expand(2, 2, 5 if stack else 6, 12, 10)
        for seed in range(3):
            out, _ = augmentation(image.clone(), label, torch.Generator().manual_seed(seed), fill)
            torch.testing.assert_close(out, image, atol=1e-5, rtol=0)

    def test_a_fill_of_the_wrong_length_is_refused(self, augmentation: Augmentation) -> None:
        image, label = self.batch(channels=2)
        with pytest.raises(
            InputShapeError,
            match=r"fill has 3 value\(s\) \[-1.0, 0.0, 0.0\] for an image of 2 channel",
        ):
            augmentation(image, label, torch.Generator(), fill=[-1.0, 0.0, 0.0])

    def test_probability_zero_changes_nothing(
        self, registry: Registry, component_name: str
    ) -> None:
        if "probability" not in registry.parameters("augmentation", component_name):
            pytest.skip(f"augmentation {component_name!r} takes no probability")
        params = {**self.component_params(component_name), "probability": 0.0}
        augmentation = registry.build("augmentation", component_name, **params)
        image, label = self.batch()
        torch.testing.assert_close(augmentation(image, label, torch.Generator()), (image, label))

    def test_mismatched_shapes_are_refused(self, augmentation: Augmentation) -> None:
        image, label = self.batch()
        with pytest.raises(InputShapeError, match=r"expects image \(b, c, z, y, x\)"):
            augmentation(image[0], label, torch.Generator())
        with pytest.raises(InputShapeError, match="label depth 3 must equal the image depth 6"):
            augmentation(image, label[:, :3], torch.Generator())
        with pytest.raises(InputShapeError, match="does not match image"):
            augmentation(image, label[:, :, :5], torch.Generator())
