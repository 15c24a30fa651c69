"""StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN"), with the configuration of StyleGAN2-ADA (Karras et al. 2020b).

Generator (Fig. 2d, Fig. 7a "skip"):  z -> MappingNetwork -> w (one per layer) ->
SynthesisNetwork: a learned constant 4x4 input, then one SynthesisBlock per resolution
(2x FIR upsampling, two modulated 3x3 convs with noise), each block adding its ToRGB
output to the upsampled running image.

Discriminator (Fig. 7b "residual"): FromRGB at the highest resolution, one residual
DiscriminatorBlock per resolution down to 8x8 (two 3x3 convs, FIR downsampling, a 1x1
skip), then the DiscriminatorEpilogue at 4x4 (minibatch stddev, conv, two dense layers).

Layer widths: channels(res) = min(channel_base // res, channel_max).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from gan.config import ModelConfig
from gan.layers import (
    LRELU_GAIN,
    NOISE_MODES,
    Conv2d,
    FullyConnected,
    MinibatchStdDev,
    NoiseInjection,
    bias_act,
    equalised_lr_gain,
    fir_filter,
    modulated_conv2d,
    normalize_2nd_moment,
    upsample2d,
)

MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024
W_AVG_BETA = 0.995  # EMA decay of the tracked mean w (StyleGAN2-ADA's w_avg_beta)


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if it is a power of two in 4..1024, else raise ValueError."""
    if not (MIN_RESOLUTION <= resolution <= MAX_RESOLUTION) or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {resolution}")
    return resolution


def channels_at(cfg: ModelConfig, resolution: int) -> int:
    """Feature maps of the layers working at ``resolution``."""
    return min(cfg.channel_base // resolution, cfg.channel_max)


# =======================================================================================
# Generator
# =======================================================================================


class MappingNetwork(nn.Module):
    """The 'Mapping network' box (StyleGAN Fig. 1b): z -> w, an MLP with lr multiplier.

    Also tracks the running mean of w (``w_avg``) for the truncation trick (StyleGAN
    Sec. 3.1 / Eq. 3): w' = w_avg + psi * (w - w_avg).
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int, lr_mul: float) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping_layers must be at least 1, got {num_layers}")
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        dims = [z_dim] + [w_dim] * num_layers
        # lr_mul (0.01): the mapping learns 100x slower, which keeps W from collapsing
        # early in training (StyleGAN App. C).
        self.layers = nn.ModuleList(FullyConnected(dims[i], dims[i + 1], activation="lrelu", lr_mul=lr_mul) for i in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self, z: torch.Tensor, psi: float = 1.0, truncation_cutoff: Optional[int] = None, update_w_avg: bool = False
    ) -> torch.Tensor:
        """z [N, z_dim] -> ws [N, num_ws, w_dim] (the same w broadcast to every layer).

        ``update_w_avg`` (training only) moves ``w_avg`` towards this batch's mean w by
        an EMA with beta 0.995. ``psi`` < 1 pulls w towards ``w_avg`` for the first
        ``truncation_cutoff`` layers (all layers when None).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            with torch.no_grad():
                moved = x.detach().float().mean(dim=0).lerp(self.w_avg, W_AVG_BETA)
                # Blend only a finite batch mean: one NaN batch (a step the loop then skips) would
                # otherwise poison w_avg for good. torch.where keeps it on the device, no host sync.
                self.w_avg.copy_(torch.where(torch.isfinite(moved).all(), moved, self.w_avg))
        ws = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if psi != 1.0:
            ws = self.truncate(ws, psi, truncation_cutoff)
        return ws

    def truncate(self, ws: torch.Tensor, psi: float, cutoff: Optional[int] = None) -> torch.Tensor:
        """Truncation trick: interpolate from ``w_avg`` (psi=0) to ws (psi=1)."""
        w_avg = self.w_avg.to(ws.dtype)
        truncated = w_avg.lerp(ws, psi)
        if cutoff is None or cutoff >= self.num_ws:
            return truncated
        return torch.cat([truncated[:, :cutoff], ws[:, cutoff:]], dim=1)


class SynthesisLayer(nn.Module):
    """One 'Mod - Demod - Conv 3x3 - + B - + b - lrelu' row of StyleGAN2 Fig. 2c/2d.

    A: the learned affine that turns w into per-input-channel styles s (bias init 1 so
    modulation starts near the identity). ``up=2`` makes it the block's upsampling conv.
    ``fused`` picks grouped (True) or activation-scaling (False) modulated convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        kernel_size: int = 3,
        conv_clamp: Optional[float] = None,
        resample_filter: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.up, self.conv_clamp, self.fused = up, conv_clamp, True
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = equalised_lr_gain(in_channels * kernel_size * kernel_size)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", resample_filter if resample_filter is not None else fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        styles = self.affine(w)
        # lrelu(y + noise + b) * g = lrelu(g*y + g*noise + g*b) for g > 0: the gain rides on
        # the demodulation multiply, which also adds the bias, so one pass follows the conv.
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=True,
            up=self.up,
            resample_filter=self.resample_filter,
            fused=self.fused,
            weight_gain=self.weight_gain,
            bias=self.bias * LRELU_GAIN,
            gain=LRELU_GAIN,
        )
        x = self.noise(x, noise_mode, gain=LRELU_GAIN)
        return bias_act(x, None, "lrelu", 1.0, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """The 'tRGB' box of Fig. 7a: a modulated 1x1 conv to RGB, without demodulation
    (the output is an image, not a feature map that the next layer expects normalised)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: Optional[float] = None) -> None:
        super().__init__()
        self.conv_clamp, self.fused = conv_clamp, True
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.weight_gain = equalised_lr_gain(in_channels)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=self.fused, weight_gain=self.weight_gain, bias=self.bias)
        return bias_act(x, None, "linear", 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator (Fig. 7a): [Up + conv0], conv1, tRGB.

    The 4x4 block starts from the learned constant (StyleGAN Fig. 1b "Const 4x4x512")
    and has no conv0. The running RGB image is FIR-upsampled and this block's ToRGB
    output added to it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, conv_clamp: Optional[float]
    ) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp, resample_filter=self.resample_filter
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [N, num_conv + 1, w_dim]: one w per conv and one for the ToRGB."""
        if self.const is not None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        rgb = self.torgb(x, ws[:, self.num_conv]).float()
        if img is None:
            return x, rgb
        # The RGB image sums small per-resolution corrections: keep it in fp32 even under
        # autocast (3 channels, so this costs next to nothing).
        with torch.autocast(device_type=rgb.device.type, enabled=False):
            return x, upsample2d(img, self.resample_filter) + rgb


class SynthesisNetwork(nn.Module):
    """The 'Synthesis network' of Fig. 2d with skip connections (Fig. 7a), 4x4 to R x R."""

    def __init__(self, cfg: ModelConfig, resolution: int, img_channels: int = 3) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.w_dim, self.img_channels = cfg.w_dim, img_channels
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        blocks = []
        for res in resolutions:
            in_ch = channels_at(cfg, res // 2) if res > 4 else 0
            blocks.append(SynthesisBlock(in_ch, channels_at(cfg, res), cfg.w_dim, res, img_channels, cfg.conv_clamp))
        self.blocks = nn.ModuleList(blocks)
        # Consecutive blocks share a w: a block's ToRGB uses the w of the next block's
        # conv0, as in StyleGAN2 (so a 2^k image has 2k-2 ws).
        self.num_ws = sum(b.num_conv for b in blocks) + blocks[-1].num_torgb

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, noise_mode)
            w_idx += block.num_conv
        return img

    def set_fused_modconv(self, fused: bool) -> None:
        """Choose grouped (True) or activation-scaling (False) modulated convolution."""
        for module in self.modules():
            if isinstance(module, (SynthesisLayer, ToRGBLayer)):
                module.fused = fused


class Generator(nn.Module):
    """StyleGAN2 generator: MappingNetwork then SynthesisNetwork (Fig. 2d).

    ``forward`` adds the training-time conveniences: style mixing regularisation
    (StyleGAN Sec. 3.1) and the w_avg update, and sampling-time truncation.
    """

    def __init__(self, cfg: ModelConfig, resolution: int, img_channels: int = 3) -> None:
        super().__init__()
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim
        self.resolution, self.img_channels = check_resolution(resolution), img_channels
        self.synthesis = SynthesisNetwork(cfg, resolution, img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers, cfg.mapping_lr_mul)

    def forward(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        noise_mode: str = "random",
        style_mix_prob: float = 0.0,
        return_ws: bool = False,
        update_w_avg: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """z [N, z_dim] -> image [N, C, R, R] in about [-1, 1] (or (image, ws))."""
        ws = self.mapping(z, psi, truncation_cutoff, update_w_avg)
        if style_mix_prob > 0:
            ws = self.mix_styles(z, ws, style_mix_prob, psi, truncation_cutoff)
        img = self.synthesis(ws, noise_mode)
        return (img, ws) if return_ws else img

    def mix_styles(
        self, z: torch.Tensor, ws: torch.Tensor, prob: float, psi: float = 1.0, truncation_cutoff: Optional[int] = None
    ) -> torch.Tensor:
        """Style mixing regularisation: with probability ``prob`` the layers from a random
        cutoff on take their w from a second random z, so D punishes a generator that
        relies on neighbouring layers' styles being correlated.

        One cutoff per minibatch, drawn on the device without a host sync.
        """
        device = ws.device
        cutoff = torch.randint(1, max(self.num_ws, 2), (), device=device)
        mix = torch.rand((), device=device) < prob
        cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, self.num_ws))
        ws2 = self.mapping(torch.randn_like(z), psi, truncation_cutoff, update_w_avg=False)
        layer = torch.arange(self.num_ws, device=device).reshape(1, -1, 1)
        return torch.where(layer < cutoff, ws, ws2)

    def set_fused_modconv(self, fused: bool) -> None:
        """Grouped (True, default) or activation-scaling (False) modulated convolutions."""
        self.synthesis.set_fused_modconv(fused)


# =======================================================================================
# Discriminator
# =======================================================================================


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual discriminator (Fig. 7b): [FromRGB], conv 3x3,
    conv 3x3 with 2x FIR downsampling, plus a 1x1 downsampling skip; both branches
    are scaled by sqrt(1/2) so their sum keeps unit variance.
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, conv_clamp: Optional[float]) -> None:
        super().__init__()
        f = fir_filter()
        self.fromrgb = Conv2d(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp) if in_channels == 0 else None
        self.conv0 = Conv2d(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp, resample_filter=f)
        self.skip = Conv2d(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: the image for the first block (which has FromRGB), else features."""
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        gain = math.sqrt(0.5)
        y = self.skip(x, gain=gain)
        x = self.conv1(self.conv0(x), gain=gain)
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of D (StyleGAN2-ADA): minibatch stddev, conv 3x3, dense, dense -> logit."""

    def __init__(
        self, in_channels: int, resolution: int, mbstd_group: int, mbstd_channels: int = 1, conv_clamp: Optional[float] = None
    ) -> None:
        super().__init__()
        self.mbstd = MinibatchStdDev(mbstd_group, mbstd_channels)
        self.conv = Conv2d(in_channels + mbstd_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * resolution * resolution, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, 1)

    def forward(self, x: torch.Tensor, mbstd_split: int = 1) -> torch.Tensor:
        x = self.conv(self.mbstd(x, mbstd_split))
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (Fig. 7b) with StyleGAN2-ADA's epilogue.

    ``blocks`` runs from the highest resolution down (``blocks[0]`` sees the image), so
    FreezeD (Mo et al. 2020) freezes ``blocks[:k]``.
    """

    def __init__(self, cfg: ModelConfig, resolution: int, img_channels: int = 3) -> None:
        super().__init__()
        self.resolution, self.img_channels = check_resolution(resolution), img_channels
        resolutions = [2**i for i in range(int(math.log2(resolution)), 2, -1)]  # R .. 8
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(
                channels_at(cfg, res) if res < resolution else 0,
                channels_at(cfg, res),
                channels_at(cfg, res // 2),
                img_channels,
                cfg.conv_clamp,
            )
            for res in resolutions
        )
        # A 4x4 discriminator has no block to hold the FromRGB layer.
        self.fromrgb = (
            Conv2d(img_channels, channels_at(cfg, 4), 1, activation="lrelu", conv_clamp=cfg.conv_clamp) if not resolutions else None
        )
        self.epilogue = DiscriminatorEpilogue(channels_at(cfg, 4), 4, cfg.mbstd_group, 1, cfg.conv_clamp)

    def forward(self, img: torch.Tensor, mbstd_split: int = 1) -> torch.Tensor:
        """img [N, C, R, R] -> logits [N, 1].

        ``mbstd_split``: the batch is that many equal, independent parts (e.g. reals then
        fakes); minibatch-stddev groups never straddle two parts.
        """
        expected = (self.img_channels, self.resolution, self.resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"D expects images [N, {', '.join(map(str, expected))}], got {list(img.shape)}")
        x = self.fromrgb(img) if self.fromrgb is not None else img
        for block in self.blocks:
            x = block(x)
        return self.epilogue(x, mbstd_split)

    def freeze_blocks(self, k: int) -> None:
        """FreezeD: stop training the first ``k`` (highest-resolution) blocks.

        Sets ``requires_grad`` (False for ``blocks[:k]``, True for the rest; other layers
        untouched). Call it before wrapping D in DDP, and re-apply it after any
        ``D.requires_grad_(True)``, which would unfreeze them.
        """
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"freeze_d must be in 0..{len(self.blocks)}, got {k}")
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= k)
