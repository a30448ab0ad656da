"""Building blocks of duoseg's networks, reusable by plugin authors.

They are plain ``nn.Module`` s, not registered components: none segments anything on
its own. Tensors are (batch, channels, z, y, x) unless a block says otherwise.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Norm = Literal["none", "instance"]


def _norm3d(norm: Norm, channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=True) if norm == "instance" else nn.Identity()


def _norm2d(norm: Norm, channels: int) -> nn.Module:
    return SliceInstanceNorm(channels, affine=True) if norm == "instance" else nn.Identity()


class SliceInstanceNorm(nn.InstanceNorm2d):
    r"""``nn.InstanceNorm2d`` that keeps a channels-last input channels-last at CPU inference.

    torch's kernel copies a channels-last (n, c, h, w) input to the plain layout and
    back, which costs more than the normalisation. In eval mode the statistics come
    from the (n, hw, c) view instead, by the shifted-data algorithm (Chan, Golub and
    LeVeque): each channel is first shifted by :math:`K_c`, the mean of a strided sample
    of about 256 of its pixels (every :math:`\lfloor hw/256 \rfloor`-th),
    :math:`d = x - K`; then the mean by a reduction and the mean square as the diagonal
    of the Gram matrix :math:`D^T D` (one BLAS call),

    .. math:: m_c = \tfrac{1}{hw} \sum_p d_{pc}, \quad
              \sigma_c^2 = \tfrac{1}{hw} (D^T D)_{cc} - m_c^2,

    and :math:`y = d s + t` with :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`,
    :math:`t = \beta - m s`, one fused multiply-add written over :math:`d`. The variance
    does not depend on the shift; what the shift buys is :math:`|m_c| \approx
    |\mu_c - K_c|`, a few standard deviations at most, where the unshifted one-pass
    form subtracts two numbers of size :math:`\mu_c^2` and loses every digit once
    :math:`|\mu_c| \gtrsim 10^3 \sigma_c` (it returned errors of 2-6 at a mean of
    1000 standard deviations). Measured against a float64 reference: at most 1e-5
    for channel means up to 1e4 standard deviations, near-constant channels and 512^2
    planes (torch's own float32 kernel: up to 9e-4); 1.4-2x faster for Net2 than torch's
    kernel. Training, running statistics, other layouts and other devices (not measured
    there) use torch's kernel.
    """

    samples = 256  # pixels per channel that estimate the shift

    def forward(self, x: Tensor) -> Tensor:
        fast = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        if self.training or self.track_running_stats or not fast or x.device.type != "cpu":
            out: Tensor = super().forward(x)
            return out
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c).float()
        shift = pixels[:, :: max(1, h * w // self.samples)].mean(1, keepdim=True)
        # Exact where a pixel lies within a factor 2 of the shift (Sterbenz): the
        # deviations keep every digit the input has.
        shifted = torch.sub(pixels, shift)
        mean = shifted.mean(1, keepdim=True)
        gram = torch.bmm(shifted.transpose(1, 2), shifted)
        square = torch.diagonal(gram, dim1=1, dim2=2).unsqueeze(1) / (h * w)
        scale = torch.rsqrt((square - mean * mean).clamp_min(0) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        offset = -mean * scale
        if self.bias is not None:
            offset = offset + self.bias
        out = torch.addcmul(offset, shifted, scale, out=shifted).to(x.dtype)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)


def slices_to_images(x: Tensor) -> Tensor:
    """(b, c, z, y, x) -> (b*z, c, y, x); a view when ``x`` is channels-last-3d."""
    b, c, z, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * z, c, h, w)


def images_to_slices(x: Tensor, batch: int) -> Tensor:
    """(b*z, c, y, x) -> (b, c, z, y, x), the inverse of :func:`slices_to_images`."""
    bz, c, h, w = x.shape
    return x.reshape(batch, bz // batch, c, h, w).permute(0, 2, 1, 3, 4)


class DilatedBlock3d(nn.Module):
    """Two kxkxk convolutions with dilation ``d``, each followed by ReLU, then dropout;
    with ``residual``, plus the input (through a 1x1x1 convolution where the widths
    differ), as MONAI's residual units and nnU-Net's residual encoders add it.

    Zero padding ``d (k - 1) / 2`` keeps the shape, so the receptive field of the
    block grows by ``2 d (k - 1)`` voxels per axis without any downsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 5,
        dilation: int = 1,
        dropout: float = 0.2,
        norm: Norm = "none",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or dilation < 1:
            raise ValueError(
                f"kernel_size must be odd and dilation >= 1, got {kernel_size} and {dilation}"
            )
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers += [
                nn.Conv3d(cin, out_channels, kernel_size, padding=padding, dilation=dilation),
                _norm3d(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        self.body = nn.Sequential(*layers)
        self.skip: nn.Module | None = None
        if residual:
            same = in_channels == out_channels
            self.skip = nn.Identity() if same else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out if self.skip is None else out + self.skip(x)


class SliceConv(nn.Module):
    """A 3x3 in-plane convolution that is z-valid: it never pads along z.

    With ``z_kernel = 3`` it is a 3x3x3 convolution that consumes one slice at each
    end of the stack; with ``z_kernel = 1`` it runs as a 2D convolution on every
    slice, which is the same arithmetic at 2D-convolution speed.
    """

    def __init__(self, in_channels: int, out_channels: int, *, z_kernel: int, norm: Norm) -> None:
        super().__init__()
        if z_kernel not in (1, 3):
            raise ValueError(f"z_kernel must be 1 or 3, got {z_kernel}")
        self.z_kernel = z_kernel
        self.conv: nn.Module
        if z_kernel == 3:
            self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=(0, 1, 1))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        # Instance statistics per slice keep the z-equivariance that a per-volume
        # normalisation would break.
        self.norm = _norm2d(norm, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        if self.z_kernel == 3:
            x = self.conv(x)
            if isinstance(self.norm, nn.Identity):
                return torch.relu_(x)
            x = slices_to_images(x)
        else:
            x = self.conv(slices_to_images(x))
        return images_to_slices(torch.relu_(self.norm(x)), batch)


class Net2EncoderBlock(nn.Module):
    """Two z-valid 3x3x3 (or per-slice 3x3) convolutions with ReLU, then dropout.

    Depth shrinks by ``z_kernels[0] - 1 + z_kernels[1] - 1`` slices; height and
    width are kept.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        z_kernels: tuple[int, int] = (3, 3),
        dropout: float = 0.0,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            SliceConv(in_channels, out_channels, z_kernel=z_kernels[0], norm=norm),
            SliceConv(out_channels, out_channels, z_kernel=z_kernels[1], norm=norm),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.depth_reduction = sum(k - 1 for k in z_kernels)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.convs(x))
        return out


class SliceCollapse(nn.Module):
    """Removes ``remove`` slices with one (remove+1)x1x1 convolution and ReLU, no padding.

    Applied to a stack of Z + remove slices it returns Z slices, each a learned
    combination of the ``remove + 1`` slices around it. ``remove = 0`` is the identity.
    """

    def __init__(self, channels: int, remove: int) -> None:
        super().__init__()
        if remove < 0:
            raise ValueError(f"remove must be >= 0, got {remove}")
        self.remove = remove
        self.conv = nn.Conv3d(channels, channels, (remove + 1, 1, 1)) if remove else None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return x
        return torch.relu(self.conv(x))


class DecoderBlock2d(nn.Module):
    """Two kxk convolutions with ReLU, then dropout, on (b, c, y, x) images.

    With ``separable`` each kxk convolution is depthwise-separable (MobileNet): a
    depthwise kxk convolution then a 1x1 one, ``c_in k^2 + c_in c_out`` multiply-adds
    per pixel instead of ``c_in c_out k^2``: 9x to 20x fewer at 5x5 for 8 to 64 channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 5,
        separable: bool = False,
        dropout: float = 0.0,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers += [
                _conv2d(cin, out_channels, kernel_size, separable),
                _norm2d(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out


def _conv2d(in_channels: int, out_channels: int, kernel_size: int, separable: bool) -> nn.Module:
    pad = kernel_size // 2
    if not separable:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad)
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=pad, groups=in_channels),
        nn.Conv2d(in_channels, out_channels, 1),
    )
