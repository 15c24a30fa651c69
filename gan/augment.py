"""The discriminator augmentation pipeline of StyleGAN2-ADA (Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data", Appendix B).

``AugmentPipe`` is applied to *every* image the discriminator sees, real and
generated alike, so D never sees a clean image once ``p > 0``. Because the same
distribution of distortions hits both sides and each transform is applied only
with probability ``p < 1``, the distortions do not "leak" into the generator.
Every transform is drawn independently per sample and gated by ``p`` (a
registered buffer, saved in ``state_dict`` and moved with ``.to(device)``).

Groups, selected by a string of letters (``"bgc"`` is the paper's default;
repeated letters are allowed, so StyleGAN2-ADA's ``"bgcfnc"`` also works):

- ``b`` pixel blitting: x-flip, 90-degree rotations, integer translation.
  Done as exact index permutations (flip / rot90 / gather with mirrored
  indices), so no resampling blur is introduced.
- ``g`` general geometric: isotropic scaling, pre-rotation, anisotropic scaling,
  post-rotation, fractional translation, composed into one 3x3 affine matrix per
  sample and applied in a single resampling pass (see ``_resample``).
- ``c`` colour: brightness, contrast, luma flip, hue rotation, saturation,
  composed into one 4x4 matrix per sample acting on homogeneous RGB, with the
  luma axis (1, 1, 1)/sqrt(3) as the grey axis.
- ``f`` image-space filtering: random gains of four octave bands.
- ``n`` corruptions: additive Gaussian noise and cutout.

Range. Inputs are images in [-1, 1]. Blitting and cutout keep that range
exactly. The geometric group is a convex combination (bilinear) of low-pass
filtered pixels; the filters have small negative lobes, so the output stays in
[-B, B] with ``B = AugmentPipe.geometric_gain_bound`` (about 3.5 in the worst
case, in practice a few percent above 1 on natural images). The colour and
filter groups and the noise are NOT clamped, as in StyleGAN2-ADA: clamping
would zero the gradient of saturated pixels and make the transform
non-invertible; since reals and fakes get the same distortion, D gains nothing
from out-of-range values. Colour output is ``A x + b`` per sample, so it is
bounded by ``max_row_sum(|A|) + max(|b|)`` of the recorded matrix; the filter
group by ``(sum |kernel|)**2``; noise is unbounded (Gaussian).

R1 with augmentation. As in StyleGAN2-ADA, R1 is the squared gradient of
``D(augment(x_real))`` with respect to the *un-augmented* real batch ``x_real``
(``x_real.requires_grad_()`` before the pipe), so the penalty's backward pass is
a double backward through the pipe. Every operation here supports it natively
in PyTorch on CPU and CUDA: flips, rot90 and gathers are permutations, the
filters are ``conv2d``, colour is ``einsum``, and ``grid_sample`` (bilinear) has
a double-backward with respect to its input (checked with ``gradgradcheck`` in
the tests; the grid itself is a constant, so no gradient through the grid is
needed). Hence no custom op is required, and the R1 gradient is exact.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from gan.layers import depthwise_fir

GROUPS: dict[str, tuple[str, ...]] = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "f": ("imgfilter",),
    "n": ("noise", "cutout"),
}
TRANSFORMS: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)

# Octave bands [0, pi/8], [pi/8, pi/4], [pi/4, pi/2], [pi/2, pi] for the 'f' group,
# and their expected share of a natural image's power (most energy is at low frequency).
_BAND_EDGES = (1 / 8, 1 / 4, 1 / 2)
_BAND_EXPECTED_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


@dataclass(frozen=True)
class AugmentStrengths:
    """Per-transform strengths; defaults are StyleGAN2-ADA's."""

    xint_max: float = 0.125  # integer translation: uniform, fraction of image size
    scale_std: float = 0.2  # isotropic scaling: log2-normal std
    rotate_max: float = 1.0  # arbitrary rotation: uniform in [-rotate_max*pi, rotate_max*pi]
    aniso_std: float = 0.2  # anisotropic scaling: log2-normal std
    xfrac_std: float = 0.125  # fractional translation: normal std, fraction of image size
    brightness_std: float = 0.2  # additive, normal std
    contrast_std: float = 0.5  # multiplicative, log2-normal std
    hue_max: float = 1.0  # hue rotation: uniform in [-hue_max*pi, hue_max*pi]
    saturation_std: float = 1.0  # log2-normal std
    imgfilter_std: float = 1.0  # band gain: log2-normal std
    noise_std: float = 0.1  # additive noise sigma ~ |N(0, noise_std)|
    cutout_size: float = 0.5  # side of the cut-out square, fraction of image size


@dataclass
class AugmentParams:
    """Everything drawn for one batch; ``AugmentPipe.apply`` is deterministic given it.

    Coordinates: pixels, origin at the image centre, x right, y down. ``geom`` maps an
    input point to its output position; ``geom_inv`` is used for sampling. ``color``
    maps homogeneous RGB (r, g, b, 1) of the input to the output. ``draws`` holds the
    raw per-transform values (identity value where the transform was not applied),
    for logging and statistics tests.
    """

    xflip: torch.Tensor  # [N] bool: mirrored left-right
    rotate90: torch.Tensor  # [N] int64: quarter turns, torch.rot90 convention
    xint: torch.Tensor  # [N, 2] int64: shift in pixels (x, y)
    geom: torch.Tensor  # [N, 3, 3]
    geom_inv: torch.Tensor  # [N, 3, 3]
    geom_active: torch.Tensor  # [N] bool
    color: torch.Tensor  # [N, 4, 4]
    color_active: torch.Tensor  # [N] bool
    band_gains: torch.Tensor  # [N, 4]
    filter_active: torch.Tensor  # [N] bool
    noise_sigma: torch.Tensor  # [N]
    cutout_center: torch.Tensor  # [N, 2] in [0, 1] image fractions
    cutout: torch.Tensor  # [N] bool
    draws: dict[str, torch.Tensor] = field(default_factory=dict)


def parse_groups(spec: str) -> frozenset[str]:
    """Transform names enabled by a group string like ``"bgc"``; ValueError on unknown letters."""
    unknown = sorted(set(spec) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown augmentation group(s) {''.join(unknown)!r} in {spec!r}; use letters from 'bgcfn'")
    return frozenset(name for letter in spec for name in GROUPS[letter])


# ----------------------------------------------------------------------------- matrices


def _matrix(rows: list[list], like: torch.Tensor) -> torch.Tensor:
    """Batch of matrices [N, R, C] from rows whose entries are [N] tensors or numbers."""
    full = [[e if torch.is_tensor(e) else torch.full_like(like, float(e)) for e in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in full], dim=-2)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A small constant tensor, made once per device and dtype; callers must not modify it.

    ``torch.tensor(list, device="cuda")`` copies from pageable host memory and waits for the
    GPU every time; the pipe runs several times per training step.
    """
    return torch.tensor(values, dtype=dtype).to(device)


def _luma_axis(like: torch.Tensor) -> torch.Tensor:
    return _constant((1.0, 1.0, 1.0, 0.0), like.device, like.dtype) / math.sqrt(3)


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation about the luma axis, embedded in 4x4 (exactly I for theta=0)."""
    v = _luma_axis(theta)[:3]
    eye = torch.eye(3, device=theta.device, dtype=theta.dtype)
    # Cross-product matrix [v]_x of the luma axis (all components equal 1/sqrt(3)).
    cross = _constant(((0.0, -1.0, 1.0), (1.0, 0.0, -1.0), (-1.0, 1.0, 0.0)), theta.device, theta.dtype) / math.sqrt(3)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    r3 = c * eye + s * cross + (1 - c) * torch.outer(v, v)
    out = torch.eye(4, device=theta.device, dtype=theta.dtype).repeat(theta.shape[0], 1, 1)
    out[:, :3, :3] = r3
    return out


# ----------------------------------------------------------------------------- filters


def _halfband_lowpass(taps: int = 12) -> np.ndarray:
    """Kaiser-windowed sinc with cutoff at half the Nyquist frequency, unit DC gain.

    Why a filter at all: bilinear sampling of the raw image aliases (a rotation or a
    zoom of fine texture produces moire) and blurs by an amount that depends on the
    sub-pixel offset. Sampling a 2x-upsampled, low-passed copy makes bilinear nearly
    exact, and low-passing again before decimating removes what lies above the output
    Nyquist. Without this D could tell augmented images apart by their aliasing, and G
    would be pushed to reproduce it (a leak). Even length puts the filter centre between
    taps, which keeps pixel centres aligned across the 2x up/down steps.
    """
    return scipy.signal.firwin(taps, 0.5, window=("kaiser", 4.0))


def _octave_filter_bank(taps: int = 31) -> np.ndarray:
    """Four zero-phase band-pass filters (octaves) that sum exactly to the unit impulse."""
    lowpasses = [scipy.signal.firwin(taps, edge, window=("kaiser", 6.0)) for edge in _BAND_EDGES]
    impulse = np.zeros(taps)
    impulse[taps // 2] = 1.0
    edges = [np.zeros(taps)] + lowpasses + [impulse]
    return np.stack([hi - lo for lo, hi in zip(edges[:-1], edges[1:])])


def _reflect_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Mirror padding of any width (F.pad's reflect mode allows less than the image size)."""
    while left > 0 or right > 0 or top > 0 or bottom > 0:
        h, w = x.shape[-2:]
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x


def _conv_separable(x: torch.Tensor, kernel_x: torch.Tensor, kernel_y: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Apply one 1-D kernel along x then y to every channel (no padding)."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(flat, kernel_x.view(1, 1, 1, -1), stride=(1, stride))
    flat = F.conv2d(flat, kernel_y.view(1, 1, -1, 1), stride=(stride, 1))
    return flat.reshape(n, c, flat.shape[-2], flat.shape[-1])


def _mirror_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Fold integer coordinates into [0, size) by mirroring about the edge pixels."""
    period = 2 * (size - 1)
    index = torch.remainder(index, period)
    return torch.where(index >= size, period - index, index)


# ----------------------------------------------------------------------------- pipeline


class AugmentPipe(nn.Module):
    """Differentiable, batched ADA augmentation: ``pipe(images) -> images`` (NCHW, [-1, 1]).

    Args:
        groups: letters from ``"bgcfn"`` selecting transform groups.
        p: initial probability of each transform (a buffer; change with ``set_p``).
        strengths: per-transform strengths (StyleGAN2-ADA defaults).
        transforms: enable exactly these transform names instead of ``groups``
            (for tests and ablations), e.g. ``["rotate"]``.
    """

    def __init__(
        self, groups: str = "bgc", p: float = 0.0, strengths: Optional[AugmentStrengths] = None, transforms: Optional[Iterable[str]] = None
    ) -> None:
        super().__init__()
        if transforms is not None:
            enabled = frozenset(transforms)
            unknown = sorted(enabled - set(TRANSFORMS))
            if unknown:
                raise ValueError(f"unknown transform(s) {unknown}; known: {', '.join(TRANSFORMS)}")
        else:
            enabled = parse_groups(groups)
        self.enabled = enabled
        self.strengths = strengths or AugmentStrengths()
        self.record_params = False  # debug hook: keep the last batch's AugmentParams
        self.last_params: Optional[AugmentParams] = None
        self.register_buffer("p", torch.zeros([]))
        self.set_p(p)
        lowpass = torch.as_tensor(_halfband_lowpass(), dtype=torch.float32)
        self.register_buffer("lowpass", lowpass, persistent=False)
        bank = torch.as_tensor(_octave_filter_bank(), dtype=torch.float32)
        self.register_buffer("band_filters", bank, persistent=False)

    def set_p(self, p: float) -> None:
        """Set the augmentation probability (in place, so the buffer keeps its device)."""
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
        with torch.no_grad():
            self.p.fill_(float(p))
        self._p_host = float(np.float32(p))  # the buffer's (float32) value, readable without a device sync

    @property
    def probability(self) -> float:
        """The current p as a Python float (no device sync)."""
        return self._p_host

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._p_host = float(self.p)

    @property
    def geometric_gain_bound(self) -> float:
        """Largest possible |output| of the geometric group for inputs in [-1, 1].

        Per axis: the worst polyphase L1 norm of the 2x up-filter times the L1 norm of
        the down-filter; bilinear interpolation is a convex combination and adds nothing.
        """
        f = self.lowpass.double()
        up = max((2 * f[0::2]).abs().sum().item(), (2 * f[1::2]).abs().sum().item())
        return float((up * f.abs().sum().item()) ** 2)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4f}, transforms={sorted(self.enabled)}"

    # ------------------------------------------------------------------ sampling

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> AugmentParams:
        """Parameters that leave every image unchanged."""
        eye3 = torch.eye(3, device=device).repeat(batch, 1, 1)
        false = torch.zeros(batch, dtype=torch.bool, device=device)
        return AugmentParams(
            xflip=false.clone(),
            rotate90=torch.zeros(batch, dtype=torch.int64, device=device),
            xint=torch.zeros(batch, 2, dtype=torch.int64, device=device),
            geom=eye3,
            geom_inv=eye3.clone(),
            geom_active=false.clone(),
            color=torch.eye(4, device=device).repeat(batch, 1, 1),
            color_active=false.clone(),
            band_gains=torch.ones(batch, 4, device=device),
            filter_active=false.clone(),
            noise_sigma=torch.zeros(batch, device=device),
            cutout_center=torch.full((batch, 2), 0.5, device=device),
            cutout=false.clone(),
        )

    def sample_params(
        self, batch: int, height: int, width: int, device: torch.device | str = "cpu", generator: Optional[torch.Generator] = None
    ) -> AugmentParams:
        """Draw every enabled transform independently per sample, each with probability p."""
        s = self.strengths
        on = self.enabled
        p = self.p.to(device)
        params = self.identity_params(batch, device)
        draws = params.draws

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(batch, *shape, device=device, generator=generator)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(batch, *shape, device=device, generator=generator)

        def gate(prob: torch.Tensor) -> torch.Tensor:
            return rand() < prob

        # --- pixel blitting ---------------------------------------------------------
        if "xflip" in on:  # x-flip: a random flip, applied with probability p (flips p/2 of images)
            params.xflip = gate(p) & (rand() < 0.5)
        if "rotate90" in on:  # 90-degree rotations: uniform over {0, 90, 180, 270}, with probability p
            k = torch.randint(0, 4, (batch,), device=device, generator=generator)
            params.rotate90 = torch.where(gate(p), k, torch.zeros_like(k))
        if "xint" in on:  # integer translation: uniform in +-xint_max of the image size, rounded
            t = (rand(2) * 2 - 1) * s.xint_max * _constant((float(width), float(height)), torch.device(device))
            params.xint = torch.where(gate(p)[:, None], torch.round(t), torch.zeros_like(t)).to(torch.int64)

        # --- general geometric: forward matrix T and its inverse, composed in order ---
        ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
        geom, geom_inv = params.geom, params.geom_inv
        active = params.geom_active

        def compose(applied: torch.Tensor, forward: torch.Tensor, inverse: torch.Tensor) -> None:
            nonlocal geom, geom_inv, active
            eye = torch.eye(3, device=device)
            forward = torch.where(applied[:, None, None], forward, eye)
            inverse = torch.where(applied[:, None, None], inverse, eye)
            geom, geom_inv, active = forward @ geom, geom_inv @ inverse, active | applied

        # Pre- and post-rotation each use 1 - sqrt(1 - p) so that P(any rotation) = p.
        p_rot = 1 - torch.sqrt(torch.clamp(1 - p, min=0))
        if "scale" in on:  # isotropic scaling: log2-normal
            applied, sc = gate(p), torch.exp2(randn() * s.scale_std)
            compose(applied, _scale2d(sc, sc), _scale2d(1 / sc, 1 / sc))
            draws["scale"] = torch.where(applied, sc, ones)
        if "rotate" in on:  # pre-rotation: uniform angle
            applied, theta = gate(p_rot), (rand() * 2 - 1) * math.pi * s.rotate_max
            compose(applied, _rotate2d(theta), _rotate2d(-theta))
            draws["rotate_pre"] = torch.where(applied, theta, zeros)
        if "aniso" in on:  # anisotropic scaling: log2-normal, area-preserving
            applied, sc = gate(p), torch.exp2(randn() * s.aniso_std)
            compose(applied, _scale2d(sc, 1 / sc), _scale2d(1 / sc, sc))
            draws["aniso"] = torch.where(applied, sc, ones)
        if "rotate" in on:  # post-rotation: uniform angle
            applied, theta = gate(p_rot), (rand() * 2 - 1) * math.pi * s.rotate_max
            compose(applied, _rotate2d(theta), _rotate2d(-theta))
            draws["rotate_post"] = torch.where(applied, theta, zeros)
        if "xfrac" in on:  # fractional translation: normal, fraction of image size
            applied = gate(p)
            t = randn(2) * s.xfrac_std * _constant((float(width), float(height)), torch.device(device))
            compose(applied, _translate2d(t[:, 0], t[:, 1]), _translate2d(-t[:, 0], -t[:, 1]))
            draws["xfrac"] = torch.where(applied[:, None], t, torch.zeros_like(t))
        params.geom, params.geom_inv, params.geom_active = geom, geom_inv, active

        # --- colour: one 4x4 matrix on homogeneous RGB --------------------------------
        color, c_active = params.color, params.color_active
        v = _luma_axis(ones)
        vv = torch.outer(v, v)
        eye4 = torch.eye(4, device=device)

        def compose_color(applied: torch.Tensor, matrix: torch.Tensor) -> None:
            nonlocal color, c_active
            color = torch.where(applied[:, None, None], matrix, eye4) @ color
            c_active = c_active | applied

        if "brightness" in on:  # brightness: add a normal offset to every channel
            applied, b = gate(p), randn() * s.brightness_std
            compose_color(applied, _translate3d(b))
            draws["brightness"] = torch.where(applied, b, zeros)
        if "contrast" in on:  # contrast: scale about mid-grey (0), log2-normal
            applied, c = gate(p), torch.exp2(randn() * s.contrast_std)
            compose_color(applied, _scale3d(c))
            draws["contrast"] = torch.where(applied, c, ones)
        if "lumaflip" in on:  # luma flip: mirror along the luma axis, a coin flip with probability p
            applied = gate(p) & (rand() < 0.5)
            compose_color(applied, (eye4 - 2 * vv).expand(batch, 4, 4))
            draws["lumaflip"] = applied.float()
        if "hue" in on:  # hue rotation: rotate about the luma axis by a uniform angle
            applied, theta = gate(p), (rand() * 2 - 1) * math.pi * s.hue_max
            compose_color(applied, _rotate_about_luma(theta))
            draws["hue"] = torch.where(applied, theta, zeros)
        if "saturation" in on:  # saturation: scale chroma (orthogonal to luma), log2-normal
            applied, sat = gate(p), torch.exp2(randn() * s.saturation_std)
            compose_color(applied, eye4 + (sat[:, None, None] - 1) * (eye4 - vv))
            draws["saturation"] = torch.where(applied, sat, ones)
        params.color, params.color_active = color, c_active

        # --- image-space filtering: per-band gains, expected power preserved ----------
        if "imgfilter" in on:
            expected = _constant(tuple(_BAND_EXPECTED_POWER), torch.device(device))
            gains = torch.ones(batch, 4, device=device)
            f_active = params.filter_active
            for band in range(4):
                applied = gate(p)
                t = torch.ones(batch, 4, device=device)
                t[:, band] = torch.where(applied, torch.exp2(randn() * s.imgfilter_std), ones)
                t = t / (expected * t.square()).sum(dim=1, keepdim=True).sqrt()
                gains = torch.where(applied[:, None], gains * t, gains)
                f_active = f_active | applied
            params.band_gains, params.filter_active = gains, f_active

        # --- corruptions ----------------------------------------------------------------
        if "noise" in on:  # additive RGB noise, sigma ~ |N(0, noise_std)|
            sigma = randn().abs() * s.noise_std
            params.noise_sigma = torch.where(gate(p), sigma, zeros)
        if "cutout" in on:  # cutout: zero a square of side cutout_size at a uniform centre
            params.cutout = gate(p)
            params.cutout_center = rand(2)
        return params

    # ------------------------------------------------------------------ applying

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch [N, C, H, W]; each sample gets its own random transforms.

        At p = 0 (where ADA starts) every transform is the identity: the batch is returned as
        it is, without drawing parameters (and without the pipe's GPU work and host syncs).
        """
        _check_images(images, self.enabled)
        if self._p_host == 0.0 and not self.record_params:
            return images
        n, _, h, w = images.shape
        # fp32 parameters even under the caller's autocast: transform matrices composed in
        # bf16 misplace samples by pixels at 256 px, and R1 (no autocast) would see other ones.
        with torch.autocast(device_type=images.device.type, enabled=False):
            params = self.sample_params(n, h, w, images.device)
        if self.record_params:
            self.last_params = params
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply given parameters (deterministic). Half types are computed in float32, and
        autocast is switched off inside: grid_sample and the filters lose too much
        precision in 16 bits, and the pipe's cost is small next to D's."""
        _check_images(images, self.enabled)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self._apply_fp32(images, params)

    def _apply_fp32(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        x = images if images.dtype in (torch.float32, torch.float64) else images.float()
        x = _apply_blit(x, params)
        if "g" in _groups_of(self.enabled):
            x = torch.where(params.geom_active[:, None, None, None], self._resample(x, params.geom_inv), x)
        if "c" in _groups_of(self.enabled):
            x = torch.where(params.color_active[:, None, None, None], _apply_color(x, params.color), x)
        if "imgfilter" in self.enabled:
            x = torch.where(params.filter_active[:, None, None, None], self._apply_bands(x, params.band_gains), x)
        if "noise" in self.enabled:
            x = x + torch.randn_like(x) * params.noise_sigma.to(x.dtype)[:, None, None, None]
        if "cutout" in self.enabled:
            x = x * _cutout_keep_mask(x, params.cutout_center, params.cutout, self.strengths.cutout_size)
        return x.to(images.dtype)

    def _resample(self, x: torch.Tensor, geom_inv: torch.Tensor) -> torch.Tensor:
        """Warp each image by its inverse affine: reflect-pad, 2x up, bilinear, 2x down.

        Reflect padding fills the area uncovered by a rotation, zoom-out or translation
        with mirrored image content. Zero padding would add black wedges and corners: an
        unnatural, high-contrast cue that costs D capacity and, if it leaked, G would
        learn to paint. Mirrored content keeps the image statistics near the border.
        """
        n, c, h, w = x.shape
        taps = self.lowpass.numel()
        ext = taps // 2 - 1  # extra 2x-resolution samples each side for the down-filter's support
        # Output sample positions at 2x resolution, in output pixels relative to the centre.
        gx = (torch.arange(-ext, 2 * w + ext, device=x.device, dtype=torch.float32) + 0.5) / 2 - w / 2
        gy = (torch.arange(-ext, 2 * h + ext, device=x.device, dtype=torch.float32) + 0.5) / 2 - h / 2
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        points = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(1, -1, 3)
        src = (points @ geom_inv.to(torch.float32).transpose(1, 2))[..., :2]  # [N, P, 2] input coords (centred)
        src = src + _constant((w / 2, h / 2), x.device)  # input pixel coordinates

        # Pad so every sample point (plus the up-filter's and bilinear's support) lies on
        # real mirrored content; one host sync to size the canvas, capped for memory. One
        # margin for all four sides, rounded up to a multiple of size/8: a handful of canvas
        # shapes instead of a new one per batch (each new shape makes cuDNN's autotuner
        # search again and the allocator carve new blocks). Extra margin changes no sample.
        support = taps // 4 + 2
        lo, hi = src.amin(dim=(0, 1)), src.amax(dim=(0, 1))
        need = torch.stack([-lo[0], hi[0] - w, -lo[1], hi[1] - h]).clamp(min=0).amax()
        quantum = max(1, max(h, w) // 8)
        margin = min(math.ceil((float(need) + support) / quantum) * quantum, 3 * max(h, w))
        left = right = top = bottom = margin
        canvas = _reflect_pad(x, left, right, top, bottom)
        canvas = self._upsample2x(canvas)

        # Normalised grid_sample coordinates (align_corners=False spans the padded extent).
        padded_w, padded_h = w + left + right, h + top + bottom
        grid_x = 2 * (src[..., 0] + left) / padded_w - 1
        grid_y = 2 * (src[..., 1] + top) / padded_h - 1
        grid = torch.stack([grid_x, grid_y], dim=-1).reshape(n, 2 * h + 2 * ext, 2 * w + 2 * ext, 2).to(x.dtype)
        sampled = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        lowpass = self.lowpass.to(x.dtype)
        return _conv_separable(sampled, lowpass, lowpass, stride=2)

    def _upsample2x(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-stuffing then low-pass (gain 2 per axis); pads keep pixel centres aligned."""
        n, c, h, w = x.shape
        taps = self.lowpass.numel()
        stuffed = x.new_zeros(n, c, 2 * h, 2 * w)
        stuffed[:, :, ::2, ::2] = x
        stuffed = F.pad(stuffed, (taps // 2, taps // 2 - 1, taps // 2, taps // 2 - 1))
        kernel = self.lowpass.to(x.dtype) * 2
        return _conv_separable(stuffed, kernel, kernel)

    def _apply_bands(self, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Filter each sample with its own kernel sum_i gain_i * band_i, separably in x and y."""
        n, c, h, w = x.shape
        kernels = (gains @ self.band_filters).to(x.dtype)  # [N, taps], zero-phase (odd, symmetric)
        half = kernels.shape[1] // 2
        per_channel = kernels.repeat_interleave(c, dim=0)  # [N*C, taps]
        flat = _reflect_pad(x, half, half, half, half).reshape(1, n * c, h + 2 * half, w + 2 * half)
        # depthwise_fir: R1 differentiates this twice; plain grouped convs would then loop over all N*C groups.
        flat = depthwise_fir(flat, per_channel[:, None, None, :])
        flat = depthwise_fir(flat, per_channel[:, None, :, None])
        return flat.reshape(n, c, h, w)


def _groups_of(enabled: frozenset[str]) -> set[str]:
    return {letter for letter, names in GROUPS.items() if enabled & set(names)}


def _check_images(images: torch.Tensor, enabled: frozenset[str]) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    _, c, h, w = images.shape
    if min(h, w) < 4:
        raise ValueError(f"images must be at least 4x4 pixels, got {h}x{w}")
    if "rotate90" in enabled and h != w:
        raise ValueError(f"90-degree rotations need square images, got {h}x{w}")
    if enabled & set(GROUPS["c"]) and c != 3:
        raise ValueError(f"colour transforms need RGB images (3 channels), got {c}")


def _apply_blit(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """x-flip, rot90 and integer translation as exact pixel permutations."""
    x = torch.where(params.xflip[:, None, None, None], x.flip(3), x)
    rotated = x
    for k in (1, 2, 3):
        rotated = torch.where((params.rotate90 == k)[:, None, None, None], torch.rot90(x, k, dims=(2, 3)), rotated)
    x = rotated
    n, c, h, w = x.shape
    # Output pixel j shows input pixel j - shift, mirrored at the borders (like reflect padding).
    cols = _mirror_index(torch.arange(w, device=x.device)[None, :] - params.xint[:, 0:1], w)  # [N, W]
    rows = _mirror_index(torch.arange(h, device=x.device)[None, :] - params.xint[:, 1:2], h)  # [N, H]
    x = x.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return x.gather(2, rows[:, None, :, None].expand(n, c, h, w))


def _apply_color(x: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """out = A @ rgb + b per pixel, with [A b; 0 1] = color."""
    color = color.to(x.dtype)
    out = torch.einsum("nij,njhw->nihw", color[:, :3, :3], x)
    return out + color[:, :3, 3, None, None]


def _cutout_keep_mask(x: torch.Tensor, center: torch.Tensor, active: torch.Tensor, size: float) -> torch.Tensor:
    """1 outside the cut-out square (and for samples without cutout), 0 inside."""
    n, _, h, w = x.shape
    px = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w
    py = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h
    inside_x = (px[None, :] - center[:, 0:1]).abs() < size / 2  # [N, W]
    inside_y = (py[None, :] - center[:, 1:2]).abs() < size / 2  # [N, H]
    inside = inside_y[:, :, None] & inside_x[:, None, :] & active[:, None, None]
    return (~inside).to(x.dtype)[:, None]
