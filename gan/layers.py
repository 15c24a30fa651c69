"""Building blocks of StyleGAN2 (Karras et al. 2020) in plain PyTorch.

Everything here is an ordinary differentiable PyTorch op (no compiled extensions), so it
runs on CPU and GPU alike, supports double backward (R1 and path-length regularisation)
and works under ``torch.autocast``.

- Equalised learning rate (ProGAN, Sec. 4.1; StyleGAN2 App. B): weights are stored with
  unit variance and scaled by ``1/sqrt(fan_in)`` at run time, so Adam's per-parameter step
  size is the same for every layer whatever its fan-in.
- FIR resampling (StyleGAN2 Fig. 2 "Upsample"/"Downsample", App. B): up/down-sampling by 2
  with the low-pass filter [1, 3, 3, 1] (outer product; a bilinear-like kernel), which removes
  the aliasing that nearest-neighbour resampling adds.
- Weight modulation and demodulation (StyleGAN2 Sec. 2.2, Fig. 2c, Eq. 1-3).
- Noise injection (StyleGAN Fig. 1 "B") and minibatch standard deviation (ProGAN Sec. 3).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
# He gain for leaky ReLU: scaling the output by sqrt(2) keeps activations at unit variance
# from layer to layer (the negative half is almost zeroed), as the equalised-lr init assumes.
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8  # keeps 1/sqrt(sum w^2) finite when a style zeroes out every input channel


def equalised_lr_gain(fan_in: int, lr_mul: float = 1.0) -> float:
    """The runtime weight scale of the equalised learning rate (ProGAN Sec. 4.1): ``lr_mul / sqrt(fan_in)``.

    Weights are stored as N(0, 1/lr_mul^2) and scaled by this at every use, so Adam's step is
    the same relative size for every layer (and ``lr_mul`` times smaller for the mapping MLP).
    The layers fold it into the styles, inputs or outputs rather than the weight (see
    :func:`modulated_conv2d`), which is equal and cheaper; this is the one place it is computed.
    """
    return lr_mul / math.sqrt(fan_in)


# ---------------------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------------------


def bias_act(
    x: torch.Tensor, bias: Optional[torch.Tensor] = None, activation: str = "linear", gain: float = 1.0, clamp: Optional[float] = None
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply ``activation``, scale by ``gain``, clamp.

    Clamping (StyleGAN2-ADA's ``conv_clamp``) bounds activations so reduced-precision
    training cannot overflow; it is inactive for well-behaved values.
    """
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.to(x.dtype).reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r} (expected 'linear' or 'lrelu')")
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def activation_gain(activation: str) -> float:
    """The variance-preserving output gain of an activation (1 for linear)."""
    return LRELU_GAIN if activation == "lrelu" else 1.0


# ---------------------------------------------------------------------------------------
# FIR filtering (plain-PyTorch equivalent of NVIDIA's upfirdn2d)
# ---------------------------------------------------------------------------------------


def fir_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """A 1-D low-pass filter normalised to sum 1 (the 2-D filter is its outer product).

    Unit DC gain means a constant image stays constant when filtered.
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError("FIR taps must be a non-empty 1-D sequence")
    return f / f.sum()


def _pad_or_crop(x: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """F.pad with (x0, x1, y0, y1); negative entries crop (as in upfirdn2d)."""
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-y0, 0) : h - max(-y1, 0), max(-x0, 0) : w - max(-x1, 0)]


class _DepthwiseFIR(torch.autograd.Function):
    """Depthwise conv of ``x`` [N, C, H, W] with a fixed filter ``k`` [C, 1, kh, kw].

    Same result as ``F.conv2d(x, k, stride=stride, padding=padding, groups=C)``. Written as a
    Function pair so that every derivative is again a depthwise filtering (the adjoint of
    this one, and the adjoint's adjoint is this one), as in NVIDIA's upfirdn2d op. With plain
    F.conv2d, the double backward of R1 and path length asks autograd for a weight gradient
    of the filter too, which PyTorch computes with one small conv per channel: hundreds of
    ops (GPU kernel launches) per FIR layer, for a gradient nobody needs. Runs in the
    input's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]):
        ctx.save_for_backward(k)
        ctx.stride, ctx.padding, ctx.in_hw = stride, padding, tuple(x.shape[2:])
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.conv2d(x, k.to(x.dtype), stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (k,) = ctx.saved_tensors
        return _DepthwiseFIRAdjoint.apply(grad, k, ctx.stride, ctx.padding, ctx.in_hw), None, None, None


class _DepthwiseFIRAdjoint(torch.autograd.Function):
    """The adjoint (transposed conv) of :class:`_DepthwiseFIR`, to spatial size ``out_hw``."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, k: torch.Tensor, stride, padding, out_hw) -> torch.Tensor:
        ctx.save_for_backward(k)
        ctx.stride, ctx.padding = stride, padding
        # A strided conv drops the last (H + 2p - kh) % stride rows/columns; put them back as zeros.
        extra = [size + 2 * p - ((n - 1) * s + kk) for size, n, s, kk, p in zip(out_hw, y.shape[2:], stride, k.shape[2:], padding)]
        with torch.autocast(device_type=y.device.type, enabled=False):
            return F.conv_transpose2d(y, k.to(y.dtype), stride=stride, padding=padding, output_padding=extra, groups=y.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (k,) = ctx.saved_tensors
        return _DepthwiseFIR.apply(grad, k, ctx.stride, ctx.padding), None, None, None, None


def depthwise_fir(x: torch.Tensor, k: torch.Tensor, stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``F.conv2d(x, k, stride, padding, groups=C)`` for a fixed filter, with cheap higher derivatives."""
    return _DepthwiseFIR.apply(x, k, tuple(stride), tuple(padding))


def depthwise_fir_transposed(x: torch.Tensor, k: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``F.conv_transpose2d(x, k, stride, padding, groups=C)`` for a fixed filter (the adjoint of
    :func:`depthwise_fir`), with cheap higher derivatives."""
    out_hw = tuple((n - 1) * s + kk - 2 * p for n, s, kk, p in zip(x.shape[2:], stride, k.shape[2:], padding))
    return _DepthwiseFIRAdjoint.apply(x, k, tuple(stride), tuple(padding), out_hw)


def _split_padding(p0: int, p1: int) -> tuple[int, int, int]:
    """Split (before, after) padding into a symmetric part the conv does for free and the
    rest (before, after) that needs an explicit pad (or crop, if negative)."""
    sym = max(min(p0, p1), 0)
    return sym, p0 - sym, p1 - sym


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample: the classic ``upfirdn``.

    ``x`` is [N, C, H, W]; ``f`` a 1-D (separable, applied along W and H) or 2-D filter;
    ``padding`` is (x0, x1, y0, y1). The filter is applied as a true convolution (flipped)
    and each channel independently (depthwise conv). Downsampling is folded into the
    filter's stride so no work is wasted on discarded pixels, and 2x upsampling with the
    usual padding into a stride-2 transposed conv, so no zeros are inserted or multiplied.
    """
    c = x.shape[1]
    f = f.to(device=x.device, dtype=x.dtype)
    # A separable filter runs as its 2-D outer product: one depthwise pass instead of two
    # 1-D ones, with the padding done by the conv (measured in docs/performance.md).
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    f2 = f2 * gain
    kh, kw = f2.shape
    x0, x1, y0, y1 = padding
    # Zero insertion + pad + filter equals a transposed conv with the unflipped filter when the
    # padding crops the 'full' result symmetrically: q = k - 1 - p0 = k - up - p1 >= 0.
    qx, qy = kw - 1 - x0, kh - 1 - y0
    if up > 1 and down == 1 and qx == kw - up - x1 >= 0 and qy == kh - up - y1 >= 0:
        return depthwise_fir_transposed(x, f2[None, None].expand(c, 1, kh, kw), (up, up), (qy, qx))
    if up > 1:
        n, _, h, w = x.shape
        # Zero insertion: every input pixel becomes the top-left of an up x up cell.
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    sx, x0, x1 = _split_padding(x0, x1)
    sy, y0, y1 = _split_padding(y0, y1)
    if any((x0, x1, y0, y1)):
        x = _pad_or_crop(x, (x0, x1, y0, y1))
    k = f2.flip([0, 1])[None, None].expand(c, 1, kh, kw)
    return depthwise_fir(x, k, stride=(down, down), padding=(sy, sx))


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling; gain 4 compensates for the 3 of 4 pixels that are inserted zeros."""
    taps = f.shape[-1]
    p0, p1 = (taps + 1) // 2, (taps - 2) // 2
    return upfirdn2d(x, f, up=2, padding=(p0, p1, p0, p1), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling (low-pass first so the discarded pixels cannot alias)."""
    taps = f.shape[-1]
    p0, p1 = (taps - 1) // 2, (taps - 2) // 2
    return upfirdn2d(x, f, down=2, padding=(p0, p1, p0, p1))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    groups: int = 1,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """'Same' conv with an odd square kernel, optionally with 2x FIR up- or down-sampling,
    plus an optional per-output-channel ``bias`` (added by the conv itself where it can).

    up=2 equals FIR-upsampling x with k//2 extra pixels of padding on each side and then a
    'valid' conv (i.e. ``upsample2d(x)`` then a 'same' conv, except that the conv sees the
    filtered border instead of zeros), but runs as a stride-2 transposed convolution
    followed by the FIR filter: 4x fewer multiply-adds than convolving the zero-stuffed
    image.
    down=2 low-pass filters first, then convolves with stride 2 (as StyleGAN2-ADA does).
    """
    out_ch, in_per_group, kh, kw = w.shape
    if kh != kw or kh % 2 != 1:
        raise ValueError(f"conv2d_resample needs an odd square kernel, got {kh}x{kw}")
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample does either up- or down-sampling, not both")
    k = kh
    if up > 1:
        if up != 2 or f is None:
            raise ValueError("upsampling supports factor 2 with a FIR filter")
        taps = f.shape[-1]
        # conv_transpose2d wants [in, out/groups, k, k] and performs a true convolution,
        # so transpose per group and flip the kernel to keep cross-correlation semantics.
        wt = w.reshape(groups, out_ch // groups, in_per_group, k, k).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, k, k).flip([2, 3])
        x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
        # Padding that makes the composite equal zero-insert + pad + FIR + 'valid' conv.
        p0 = (taps + 1) // 2 + k // 2 - (k - 1)
        p1 = taps + 1 - k - p0
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=4.0)
        return x if bias is None else x + bias.reshape(1, -1, 1, 1)
    if down > 1:
        if down != 2 or f is None:
            raise ValueError("downsampling supports factor 2 with a FIR filter")
        taps = f.shape[-1]
        p0 = (taps - 2 + 1) // 2 + k // 2
        p1 = (taps - 2) // 2 + k // 2
        if k == 1:
            # A 1x1 conv commutes with subsampling: subsample first, convolve 4x fewer pixels.
            x = upfirdn2d(x, f, down=2, padding=(p0, p1, p0, p1))
            return F.conv2d(x, w, bias, groups=groups)
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, bias, stride=2, groups=groups)
    return F.conv2d(x, w, bias, padding=k // 2, groups=groups)


# ---------------------------------------------------------------------------------------
# Equalised-learning-rate layers
# ---------------------------------------------------------------------------------------


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate (ProGAN Sec. 4.1).

    ``lr_mul`` < 1 slows the layer down (the mapping network uses 0.01, StyleGAN Sec. 2):
    the stored weight is initialised N(0, 1/lr_mul^2) and multiplied by
    ``lr_mul / sqrt(fan_in)`` at run time, so the effective weight starts at the usual
    N(0, 1/fan_in) while every Adam step moves it ``lr_mul`` times less.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str = "linear",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        # Stored as bias_init / lr_mul so the effective bias starts exactly at bias_init.
        self.bias = nn.Parameter(torch.full([out_features], bias_init / lr_mul)) if bias else None
        self.weight_gain = equalised_lr_gain(in_features, lr_mul)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (x * c) @ w.T equals x @ (c * w).T; scaling the [N, in] input instead of the
        # [out, in] weight is a smaller multiply (and backward) when the batch is below `out`.
        b = (self.bias * self.bias_gain).to(x.dtype) if self.bias is not None else None
        x = F.linear(x * self.weight_gain, self.weight.to(x.dtype), b)
        return bias_act(x, None, self.activation, activation_gain(self.activation))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class Conv2d(nn.Module):
    """Convolution with equalised learning rate, optional 2x FIR down/up-sampling (D's layers)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        conv_clamp: Optional[float] = None,
        resample_filter: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = equalised_lr_gain(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", resample_filter if resample_filter is not None else fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """``gain`` scales the output (and the clamp), e.g. sqrt(0.5) on residual branches."""
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        out_gain = activation_gain(self.activation) * gain
        c = self.weight_gain
        if x.dtype == torch.float16:  # unscaled weights give ~sqrt(fan_in)x larger sums: fp16 could overflow
            x = conv2d_resample(x, (self.weight * c).to(x.dtype), self.resample_filter, up=self.up, down=self.down)
            return bias_act(x, self.bias, self.activation, out_gain, clamp)
        # lrelu(conv(x, c*w) + b) = c * lrelu(conv(x, w) + b/c) for c > 0: the conv adds the
        # bias and c joins the output gain, which saves a weight-sized multiply and a pass
        # over the activations (each also in backward).
        b = (self.bias / c).to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, self.weight.to(x.dtype), self.resample_filter, up=self.up, down=self.down, bias=b)
        return bias_act(x, None, self.activation, out_gain * c, clamp)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"in={i}, out={o}, kernel={k}, up={self.up}, down={self.down}, activation={self.activation}"


# ---------------------------------------------------------------------------------------
# Modulated convolution (StyleGAN2 Sec. 2.2, Fig. 2c)
# ---------------------------------------------------------------------------------------


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: Optional[torch.Tensor] = None,
    fused: bool = True,
    weight_gain: float = 1.0,
    bias: Optional[torch.Tensor] = None,
    gain: float = 1.0,
) -> torch.Tensor:
    """Convolve each sample with its own style-modulated (and demodulated) weights.

    Eq. 1: w'_oik = s_i * w_oik.  Eq. 3: w''_oik = w'_oik / sqrt(sum_ik w'_oik^2 + eps).
    ``x`` [N, I, H, W], ``weight`` [O, I, k, k] times the equalised-lr ``weight_gain``,
    ``styles`` [N, I]. Returns ``gain * conv + bias`` (``bias`` [O]).

    The weight gain is folded into the styles (s_i * (c w_oik) = (c s_i) w_oik) and the
    output gain and bias into the demodulation multiply, so no weight-sized tensor is
    scaled and the output costs one pass (and its backward) instead of three.

    Two equivalent formulations (StyleGAN2 App. B):
    - fused=True: build per-sample weights [N*O, I, k, k] and run ONE grouped conv with the
      batch folded into the channel groups.
    - fused=False: scale the activations by the styles, convolve with the shared weight,
      scale the outputs by the demodulation coefficients; no per-sample weights.
    """
    n, in_ch = x.shape[0], x.shape[1]
    out_ch, _, k, _ = weight.shape
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [N={n}, I={in_ch}], got {list(styles.shape)}")
    # Demodulation coefficients in fp32 even under autocast: they are 1/sqrt of a sum of
    # I*k*k squares, which in bf16/fp16 loses most of its precision (or overflows in fp16)
    # and would then scale every output channel by a wrong factor.
    with torch.autocast(device_type=x.device.type, enabled=False):
        w32, s32 = weight.float(), styles.float() * weight_gain
        dcoefs = None
        if demodulate:
            # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 * sum_k w_oik^2  ->  [N, O] by a matmul.
            dcoefs = (s32.square() @ w32.square().sum(dim=[2, 3]).t() + DEMOD_EPS).rsqrt()
        if fused:
            wn = w32.unsqueeze(0) * s32.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
            if dcoefs is not None:
                wn = wn * dcoefs.reshape(n, out_ch, 1, 1, 1)
            wn = wn.reshape(n * out_ch, in_ch, k, k)
            if gain != 1.0:
                wn = wn * gain
    b = bias.to(x.dtype).reshape(1, out_ch, 1, 1) if bias is not None else None
    if fused:
        x = x.reshape(1, n * in_ch, *x.shape[2:])
        x = conv2d_resample(x, wn.to(x.dtype), resample_filter, up=up, groups=n)
        x = x.reshape(n, out_ch, *x.shape[2:])
        return x if b is None else x + b
    x = x * s32.to(x.dtype).reshape(n, in_ch, 1, 1)
    if dcoefs is None:
        w = weight.to(x.dtype) if gain == 1.0 else weight.to(x.dtype) * gain
        return conv2d_resample(x, w, resample_filter, up=up, bias=None if bias is None else bias.to(x.dtype))
    x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up)
    scale = (dcoefs * gain).to(x.dtype).reshape(n, out_ch, 1, 1)
    return x * scale if b is None else torch.addcmul(b, x, scale)


# ---------------------------------------------------------------------------------------
# Noise and minibatch statistics
# ---------------------------------------------------------------------------------------

# The one list of noise modes (gan.sampling and the generate CLI use it); "const" first, the sampling default.
NOISE_MODES = ("const", "random", "none")


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise scaled by a learned per-layer strength (Fig. 2 "B").

    The strength starts at 0, so training begins with a deterministic generator and only
    adds stochastic detail where it helps. ``const`` mode uses a fixed noise image stored
    as a (saved) buffer, so the same latent always paints the same picture.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        """Add the scaled noise; ``gain`` multiplies the strength (the layer's output gain)."""
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.const.to(x.dtype)
        elif noise_mode == "none":
            return x
        else:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}")
        return x + noise * (self.strength * gain).to(x.dtype)


def mbstd_group_size(batch: int, group_size: int) -> int:
    """Largest divisor of ``batch`` not above ``group_size``: every group is full-sized."""
    for g in range(min(group_size, batch), 0, -1):
        if batch % g == 0:
            return g
    return 1


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (ProGAN Sec. 3; StyleGAN2 Fig. 7 D's last block).

    Appends ``num_channels`` feature maps holding the average standard deviation of the
    features across a group of samples, so D can see (and punish) a lack of variety.
    Groups are strided as in NVIDIA's code (of ``m = N / G`` groups, sample i is in group
    i mod m), so an imported NVIDIA discriminator gives NVIDIA's logits on any batch. The group
    size is the largest divisor of the batch (of each of ``split`` equal parts) not above
    ``group_size``, so any batch size works and, with ``split=2``, a [real; fake] batch never
    mixes reals with fakes in a group (NVIDIA runs D on them separately: the same groups).
    """

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor, split: int = 1) -> torch.Tensor:
        n, c, h, w = x.shape
        if n % split != 0:
            raise ValueError(f"batch of {n} cannot be split into {split} equal parts")
        g = mbstd_group_size(n // split, self.group_size)
        f = self.num_channels
        m = n // split // g  # groups per part
        # Statistics in fp32: a variance of bf16 activations is mostly rounding noise.
        y = x.float().reshape(split, g, m, f, c // f, h, w)  # sample (s, j, k) is in group (s, k)
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt()  # eps: sqrt has an infinite slope at 0
        y = y.mean(dim=[3, 4, 5])  # [split, m, f]
        y = y.reshape(split, 1, m, f, 1, 1).expand(split, g, m, f, h, w).reshape(n, f, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each latent to unit mean square (StyleGAN's PixelNorm on z)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()
