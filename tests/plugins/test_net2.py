from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from duoseg.core import InputShapeError, Registry, network_cost
from duoseg.plugins.networks.blocks import SliceInstanceNorm


def separate_calls(net, x: torch.Tensor, k: int) -> torch.Tensor:
    depth = x.shape[2] - k + 1
    return torch.cat([net(x[:, :, i : i + k]) for i in range(depth)], 2)


@pytest.mark.parametrize("k", [3, 5, 9])
@pytest.mark.parametrize("size", [(16, 16), (37, 29), (64, 48)])
def test_one_pass_equals_separate_k_slice_calls(registry: Registry, k: int, size) -> None:
    torch.manual_seed(k)
    net = registry.build("network", "net2", k=k, base_width=8).eval()
    x = torch.randn(2, 2, 6 + k - 1, *size)
    with torch.no_grad():
        stacked, separate = net(x), separate_calls(net, x, k)
    assert stacked.shape == (2, 8, 6, *size)
    assert (stacked - separate).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("guidance", "outside"),
    [("foreground", [-1.0, 0.0]), ("probabilities", [-1.0, 1.0] + [0.0] * 7)],
)
def test_an_odd_tile_is_padded_with_what_lies_outside_the_volume(
    registry: Registry, guidance: str, outside: list[float]
) -> None:
    """A 21x19 tile equals the same tile padded by hand to 24x24 with the image's fill
    (-1) and certain background for the guidance, as augmentation and streaming pad."""
    torch.manual_seed(0)
    net = registry.build("network", "net2", k=3, base_width=4, guidance=guidance).eval()
    x = torch.rand(1, net.in_channels, 5, 21, 19)
    padded = torch.tensor(outside).reshape(1, -1, 1, 1, 1).expand(1, -1, 5, 24, 24).clone()
    padded[..., :21, :19] = x
    with torch.no_grad():
        got, expected = net(x), net(padded)[..., :21, :19]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", [{"decoder_kernel": 3}, {"separable": True}])
def test_every_decoder_keeps_the_one_pass_equivalence(registry: Registry, decoder) -> None:
    torch.manual_seed(0)
    net = registry.build("network", "net2", k=5, base_width=8, norm="instance", **decoder).eval()
    x = torch.randn(1, 2, 10, 24, 40)
    with torch.no_grad():
        assert (net(x) - separate_calls(net, x, 5)).abs().max() <= 1e-5


def test_cheaper_decoders_cost_less(registry: Registry) -> None:
    shape = (1, 2, 13, 64, 64)
    cost = {
        name: network_cost(registry.build("network", "net2", base_width=8, **params), shape)
        for name, params in {"5x5": {}, "3x3": {"decoder_kernel": 3},
                             "separable": {"separable": True}}.items()
    }  # fmt: skip
    flops = {name: c.flops_per_output_voxel for name, c in cost.items()}
    assert flops["separable"] < flops["3x3"] < 0.6 * flops["5x5"]


def test_an_unsupported_decoder_kernel_is_refused(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"decoder_kernel must be 3, 5 or 7, got 4"):
        registry.build("network", "net2", decoder_kernel=4)


@pytest.mark.parametrize("z_valid_convs", [0, 2])
def test_equivariance_holds_for_every_slice_collapse_layout(registry, z_valid_convs) -> None:
    net = registry.build(
        "network", "net2", k=9, base_width=8, z_valid_convs=z_valid_convs, norm="instance"
    ).eval()
    x = torch.randn(1, 2, 12, 24, 24)
    with torch.no_grad():
        assert (net(x) - separate_calls(net, x, 9)).abs().max() <= 1e-5


def test_residual_guidance_keeps_equivariance_and_adds_net1s_log_probabilities(registry) -> None:
    torch.manual_seed(0)
    net = registry.build(
        "network", "net2", k=5, base_width=8, guidance="probabilities", residual=True
    ).eval()
    guidance = torch.rand(1, 8, 10, 24, 24).softmax(1)
    x = torch.cat((torch.randn(1, 1, 10, 24, 24), guidance), 1)
    with torch.no_grad():
        scores = net(x)
        assert (scores - separate_calls(net, x, 5)).abs().max() <= 1e-5
        net.residual = False
        plain = net(x)
    torch.testing.assert_close(scores - plain, guidance[:, :, 2:8].log())


def test_residual_needs_the_full_probabilities(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"needs guidance='probabilities', got guidance="):
        registry.build("network", "net2", residual=True)


def test_a_slice_only_influences_the_predictions_within_k(registry: Registry) -> None:
    net = registry.build("network", "net2", base_width=8).eval()
    x = torch.randn(1, 2, 20, 16, 16)
    changed = x.clone()
    changed[:, :, 10] += 1
    with torch.no_grad():
        diff = (net(x) - net(changed)).abs().amax(dim=(0, 1, 3, 4))
    # input slice 10 is in the windows of output slices 2..10 (k = 9)
    assert torch.all(diff[2:11] > 0) and torch.all(diff[:2] == 0) and torch.all(diff[11:] == 0)


@pytest.mark.parametrize("k", [8, 1, 0])
def test_even_or_too_small_k_is_refused(registry: Registry, k: int) -> None:
    with pytest.raises(InputShapeError, match=f"odd number of slices k >= 3.*got k={k}"):
        registry.build("network", "net2", k=k)


def test_too_few_slices_are_refused(registry: Registry) -> None:
    net = registry.build("network", "net2", k=9)
    with pytest.raises(InputShapeError, match=r"k=9 needs at least 9 slices along z, got 5"):
        net(torch.zeros(1, 2, 5, 16, 16))


def test_too_many_z_valid_convolutions_are_refused(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"z_valid_convs must lie in 0..2 for k=5, got 3"):
        registry.build("network", "net2", k=5, z_valid_convs=3)


def test_defaults_are_the_papers_configuration(registry: Registry) -> None:
    net = registry.build("network", "net2")
    assert (net.k, net.in_channels, net.out_channels) == (9, 2, 8)
    assert net.output_shape((1, 2, 9, 512, 512)) == (1, 8, 1, 512, 512)


def test_full_class_probabilities_as_input(registry: Registry) -> None:
    net = registry.build("network", "net2", guidance="probabilities", base_width=8).eval()
    assert net.in_channels == 1 + 8
    assert net(torch.zeros(1, 9, 9, 16, 16)).shape == (1, 8, 1, 16, 16)


def test_unknown_guidance_is_refused(registry: Registry) -> None:
    with pytest.raises(InputShapeError, match=r"guidance must be one of .*, got 'labels'"):
        registry.build("network", "net2", guidance="labels")


@pytest.mark.parametrize(
    ("mean", "spread", "side"),
    [(2.0, 3.0, 48), (0.0, 1e-3, 48), (10.0, 1.0, 48), (1e4, 1.0, 512), (5.0, 1e-3, 512)],
)
@pytest.mark.parametrize("affine", [True, False])
def test_the_channels_last_instance_norm_equals_torchs_and_keeps_the_layout(
    mean, spread, side, affine
) -> None:
    """Against float64 statistics: channel means of 1e4 standard deviations and
    near-constant channels on 512^2 planes included (the one-pass variance lost every
    digit there)."""
    torch.manual_seed(0)
    norm = SliceInstanceNorm(6, affine=affine).eval()
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 6, side, side) * spread + mean
    weight, bias = (norm.weight.double(), norm.bias.double()) if affine else (None, None)
    exact = F.instance_norm(x.double(), weight=weight, bias=bias, eps=norm.eps).float()
    with torch.no_grad():
        got = norm(x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, exact, atol=1e-4, rtol=1e-4)
    expected = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    norm.train()  # training: torch's kernel, whatever the layout
    torch.testing.assert_close(norm(x.contiguous(memory_format=torch.channels_last)), expected)


def test_the_instance_norm_shift_survives_an_outlying_pixel() -> None:
    """The shift is a sample mean, not one pixel: a far corner pixel (padding, a
    bright implant) does not bring the cancellation back."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 256, 256) + 1e4
    x[:, :, 0, 0] = 0.0
    exact = F.instance_norm(x.double(), eps=1e-5).float()
    with torch.no_grad():
        got = SliceInstanceNorm(4).eval()(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, exact, atol=1e-4, rtol=1e-4)
