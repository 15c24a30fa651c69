"""Image transformation network for fast style transfer (Johnson, Alahi & Fei-Fei, ECCV 2016).

A feed-forward network ``f_W`` is trained so that ``y = f_W(x)`` minimises the same
perceptual losses Gatys et al. minimise by optimising each image (a fixed VGG measures them,
see :mod:`eval.refine_train`); stylising then costs one forward pass.

Architecture (the paper's supplementary Table 1, with the two changes everyone adopted):

====================  =========================================================
``c9s1-32``           9x9 conv, stride 1, 32 filters, instance norm, ReLU
``d64``, ``d128``     3x3 conv, stride 2 (downsampling), instance norm, ReLU
``R128`` x 5          residual blocks: two 3x3 convs, each with instance norm, ReLU
                      after the first only (Gross & Wilber's variant the paper uses)
``u64``, ``u32``      upsample x2 (nearest) then 3x3 conv, instance norm, ReLU
``c9s1-3``            9x9 conv to RGB, scaled tanh to [0, 1]
====================  =========================================================

* Instance norm instead of batch norm (Ulyanov, Vedaldi & Lempitsky 2016): normalising each
  image's own feature statistics is what makes the stylisation independent of the batch and
  markedly better; it also lets the network run on one image of any size.
* Resize-convolution instead of the paper's fractionally strided convolutions (Odena, Dumoulin
  & Olah 2016, "Deconvolution and Checkerboard Artifacts"): a stride-2 transposed 3x3 conv
  covers output pixels unevenly and paints a checkerboard; nearest upsampling followed by a
  convolution covers every pixel the same way.
* Reflection padding at every convolution (as in the paper's released code) so the borders
  do not darken.

Any input size works: the input is reflection-padded to a multiple of 4 (two stride-2 steps)
and the output cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransferNetConfig:
    """Width and depth of the network; the defaults are the paper's."""

    channels: int = 32  # filters of the first layer; the paper's d64/d128/R128 are 2x and 4x this
    residual_blocks: int = 5

    def validate(self) -> None:
        """Raise ValueError (one line) for a network that cannot be built."""
        if self.channels < 1 or self.residual_blocks < 0:
            raise ValueError(f"channels must be >= 1 and residual_blocks >= 0, got {asdict(self)}")


class ConvLayer(nn.Module):
    """Reflection-padded convolution, optionally followed by instance norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
        # Affine instance norm: each channel learns its own scale and shift after normalising.
        self.norm = nn.InstanceNorm2d(out_channels, affine=True) if norm else nn.Identity()
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv(self.pad(x))))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))): the identity path keeps the content, the block adds style."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.conv2 = ConvLayer(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class UpsampleConv(nn.Module):
    """Nearest-neighbour x2 upsampling then a convolution (no checkerboard, unlike a transposed conv)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvLayer(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransferNet(nn.Module):
    """The image transformation network: RGB in [0, 1], any size -> stylised RGB in [0, 1], same size."""

    def __init__(self, config: TransferNetConfig = TransferNetConfig()):
        super().__init__()
        config.validate()
        self.config = config
        c = config.channels
        self.encoder = nn.Sequential(ConvLayer(3, c, 9), ConvLayer(c, 2 * c, 3, stride=2), ConvLayer(2 * c, 4 * c, 3, stride=2))
        self.residuals = nn.Sequential(*[ResidualBlock(4 * c) for _ in range(config.residual_blocks)])
        self.decoder = nn.Sequential(UpsampleConv(4 * c, 2 * c), UpsampleConv(2 * c, c))
        self.output = ConvLayer(c, 3, 9, norm=False, relu=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        # Two stride-2 steps: pad to a multiple of 4 so the decoder lands on the input's size.
        pad_h, pad_w = (-height) % 4, (-width) % 4
        x = images
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        y = self.output(self.decoder(self.residuals(self.encoder(x))))
        # The paper's scaled tanh, mapped to the [0, 1] pixel range this project uses.
        return (torch.tanh(y[..., :height, :width]) + 1) / 2
