"""Neural style transfer by image optimisation (Gatys, Ecker & Bethge, CVPR 2016).

For a batch of content images ``c`` (the GAN samples) and, per image, a blend of style
images, the refined image ``x`` minimises (each image independently; the batch only
shares the VGG forward passes)::

    L(x) = content_weight * Lc(x) + f(strength) * (style_weight * Ls(x) + tv_weight * Ltv(x))

* ``Lc``: content loss at conv4_2, ``|F(x) - F(c)|^2 / |F(c)|^2`` (paper Eq. 1, made relative).
* ``Ls``: style loss, the mean over conv1_1 ... conv5_1 of ``|G(x) - A|^2 / |A|^2`` where ``G``
  is the Gram matrix of a layer's responses and ``A`` the target Gram (paper Eq. 3-5 with
  equal layer weights ``w_l = 1/5``, made relative).
* ``Ltv``: total variation, the mean squared difference of neighbouring pixels; it keeps the
  optimisation from adding pixel-level noise that VGG cannot see.

Why relative losses: dividing each term by the size of its target makes every term
dimensionless (0 = identical statistics, 1 = an error as large as the target itself), so
the five style layers count equally whatever their activation scale, the default weights
are not tied to the activation scale of one particular checkpoint, and the numbers in the
report mean the same at any image size.

Strength (what users dial): ``f(s) = s * 10 ** (decades * (s - 1))`` scales the style and
TV terms, so the style/content weight ratio moves on a log scale (the factor ``s`` in front
only bends the last stretch down to exactly zero). With the default ``decades = 3``:
``s = 1`` uses the full weights, ``0.75`` about 1/8 of them, ``0.5`` 1/60, ``0.25`` 1/700,
and ``s = 0`` returns the input exactly, without optimising. The optimisation starts from
the content image, where ``Lc`` is zero and minimal, so a small ``f`` moves the image only
a little: ``f`` is continuous and increasing, and the result goes monotonically from "the
sample" (0) to "full transfer" (1). The output is not cross-faded with the input: that
would wash out the brushwork being added.

Colour (``preserve_color``): luminance-only transfer (Gatys et al. 2016, "Preserving Color
in Neural Artistic Style Transfer"). The sample and the style images are converted to
YCbCr (BT.601, full range); each style image's luminance is matched to the sample's mean
and standard deviation; only the luminance channel Y is optimised (fed to VGG as grey
RGB); the output recombines the optimised Y with the sample's own Cb and Cr.

Sizes above ``max_single_scale`` (512 px, about the size Gatys et al. worked at; VGG's
receptive fields are fixed in pixels, so a single pass at 2048 px would only see fine
texture and miss the larger brush strokes) are optimised coarse to fine: the image is first refined at the largest half, quarter, ...
size not above it, then upsampled and refined again at each doubling up to the full size,
with half the steps at each finer scale because it starts from a good image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from eval.vgg import VGG19Features

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
FEATURE_LAYERS = STYLE_LAYERS + (CONTENT_LAYER,)
OPTIMIZERS = ("lbfgs", "adam")
_EPS = 1e-12
# L-BFGS iterations per optimiser.step() call: the progress bar advances between calls.
_LBFGS_CHUNK = 10

Progress = Callable[[int], None]


@dataclass(frozen=True)
class TransferSettings:
    """Everything that decides the refined image (recorded in every report)."""

    strength: float = 0.75  # 0 = unchanged, 1 = full transfer (see module docstring)
    steps: int = 300  # optimiser iterations at the coarsest scale (L-BFGS iterations or Adam steps)
    optimizer: str = "lbfgs"
    lr: float = 0.02  # Adam only: step size in [0, 1] pixel units
    content_weight: float = 1.0
    style_weight: float = 1e3  # at strength 1; relative losses, so ~1e2-1e4 is the useful range
    tv_weight: float = 100.0  # at strength 1; Ltv of a typical painting is ~1e-3
    strength_decades: float = 3.0  # decades of style weight that strength 0..1 sweeps
    preserve_color: bool = False
    max_single_scale: int = 512
    pooling: str = "avg"

    def validate(self) -> None:
        """Raise ValueError (one line, naming the setting) for values that cannot work."""
        if not 0.0 <= self.strength <= 1.0 or math.isnan(self.strength):
            raise ValueError(f"strength must be between 0 and 1, got {self.strength}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("lr", "content_weight", "style_weight", "strength_decades"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.tv_weight < 0:
            raise ValueError(f"tv_weight must not be negative, got {self.tv_weight}")
        if self.max_single_scale < 16:
            raise ValueError(f"max_single_scale must be at least 16 px, got {self.max_single_scale}")

    def strength_factor(self) -> float:
        """Multiplier of the style and TV weights: s * 10 ** (decades * (s - 1)); 0 at s = 0, 1 at s = 1."""
        return self.strength * 10.0 ** (self.strength_decades * (self.strength - 1.0))


@dataclass
class StyleBank:
    """The style images of a batch and how much of each one every sample uses.

    ``images``: distinct style images, each [3, h, w] RGB in [0, 1] (sizes may differ).
    ``mix``: [num_samples, num_images]; row i holds sample i's blend weights (summing to 1).
    Blending Gram targets is exact: for weights summing to one,
    ``sum_j w_j |G - A_j|^2 = |G - sum_j w_j A_j|^2 + const``, so it has the same gradient
    as Gatys' weighted sum of style losses and costs one loss term.
    """

    images: list[torch.Tensor]
    mix: torch.Tensor

    def __post_init__(self) -> None:
        if self.mix.ndim != 2 or self.mix.shape[1] != len(self.images):
            raise ValueError(f"mix must be [samples, {len(self.images)}], got {tuple(self.mix.shape)}")
        if not torch.allclose(self.mix.sum(dim=1), torch.ones_like(self.mix.sum(dim=1)), atol=1e-4):
            raise ValueError("every sample's style blend weights must sum to 1")


@dataclass
class TransferResult:
    """Refined images (quantised to 8 bits, as written) and per-image losses."""

    images: torch.Tensor  # [N, 3, H, W] in [0, 1]
    style_loss_before: list[float]
    style_loss_after: list[float]
    content_loss: list[float]  # Lc between the sample and its refined version
    iterations: int
    scales: list[tuple[int, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------- losses


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices [N, C, C] of responses [N, C, H, W], divided by C*H*W.

    Dividing by H*W makes it a spatial average, so a style image of any size (and every
    scale of the coarse-to-fine schedule) yields comparable targets; dividing by C as
    well keeps entries of wide and narrow layers on a similar scale in float32.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def style_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image style loss [N]: mean over style layers of |G - A|^2 / |A|^2."""
    terms = []
    for layer in STYLE_LAYERS:
        target = targets[layer]
        error = (gram_matrix(features[layer]) - target).square().sum(dim=(1, 2))
        terms.append(error / target.square().sum(dim=(1, 2)).clamp_min(_EPS))
    return torch.stack(terms).mean(dim=0)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image content loss [N]: |F - P|^2 / |P|^2 at the content layer."""
    dims = tuple(range(1, features.ndim))
    return (features - target).square().sum(dim=dims) / target.square().sum(dim=dims).clamp_min(_EPS)


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Per-image total variation [N]: mean squared difference of vertical and horizontal neighbours."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).square().mean(dim=(1, 2, 3))
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).square().mean(dim=(1, 2, 3))
    return dx + dy


# ---------------------------------------------------------------------------- colour

# BT.601 full-range (JPEG) RGB -> YCbCr; Cb and Cr are offset by 0.5 to live in [0, 1].
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)
_CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)


def rgb_to_ycbcr(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> YCbCr (BT.601 full range, chroma centred on 0.5)."""
    matrix = _RGB_TO_YCBCR.to(images)
    return torch.einsum("ij,njhw->nihw", matrix, images) + _CHROMA_OFFSET.to(images).view(1, 3, 1, 1)


def ycbcr_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    inverse = torch.linalg.inv(_RGB_TO_YCBCR).to(images)
    centred = images - _CHROMA_OFFSET.to(images).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", inverse, centred)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Y channel [N, 1, H, W] of RGB images."""
    return rgb_to_ycbcr(images)[:, :1]


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale a style luminance to the content's mean and std (Gatys et al. 2016b, Eq. 1)."""
    style_std = style_y.std().clamp_min(1e-6)
    return (style_y - style_y.mean()) / style_std * content_y.std() + content_y.mean()


def recombine_chroma(y: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """RGB from an optimised luminance ``y`` [N, 1, H, W] and the content's own Cb/Cr.

    Y is first clamped, per pixel, to the range where that chroma stays inside the RGB cube
    (every RGB channel is Y plus a chroma-only offset), so clamping the RGB later never
    changes the hue: the sample's chroma survives exactly, up to 8-bit rounding.
    """
    chroma = rgb_to_ycbcr(content)[:, 1:]
    offsets = ycbcr_to_rgb(torch.cat([torch.zeros_like(y), chroma], dim=1))  # RGB at Y = 0
    low = (-offsets).amax(dim=1, keepdim=True)
    high = (1 - offsets).amin(dim=1, keepdim=True)
    y = torch.maximum(torch.minimum(y, high), low)
    return ycbcr_to_rgb(torch.cat([y, chroma], dim=1))


def _vgg_input(images: torch.Tensor) -> torch.Tensor:
    """VGG takes RGB; a luminance-only image is fed as grey RGB."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# ---------------------------------------------------------------------------- targets


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


def _scaled(image: torch.Tensor, scale: float) -> torch.Tensor:
    """One [3, h, w] image resized by ``scale`` (at least 16 px a side), as a batch of one."""
    h, w = image.shape[-2:]
    size = (max(16, round(h * scale)), max(16, round(w * scale)))
    return _resize(image.unsqueeze(0), size)


@torch.no_grad()
def _image_grams(vgg: VGG19Features, image: torch.Tensor) -> dict[str, torch.Tensor]:
    features = vgg(_vgg_input(image))
    return {layer: gram_matrix(features[layer])[0] for layer in STYLE_LAYERS}


@torch.no_grad()
def style_targets(
    vgg: VGG19Features, bank: StyleBank, content: torch.Tensor, scale: float, preserve_color: bool
) -> dict[str, torch.Tensor]:
    """Blended target Grams [N, C, C] per style layer, for style images resized by ``scale``.

    ``content`` is the batch in the optimised space ([N, 1, H, W] luminance when colours are
    preserved, used to match each style image's luminance to its sample).
    """
    device = content.device
    mix = bank.mix.to(device=device, dtype=torch.float32)
    style_images = [_scaled(image.to(device), scale) for image in bank.images]
    if not preserve_color:
        grams = [_image_grams(vgg, image) for image in style_images]
        return {
            layer: torch.einsum("nb,bcd->ncd", mix, torch.stack([g[layer] for g in grams])) for layer in STYLE_LAYERS
        }
    # Luminance matching depends on the sample, so each (sample, style image) pair gets its own Gram.
    style_ys = [luminance(image) for image in style_images]
    targets = {layer: [] for layer in STYLE_LAYERS}
    for i in range(content.shape[0]):
        blended = {layer: 0.0 for layer in STYLE_LAYERS}
        for j in torch.nonzero(mix[i] > 0).flatten().tolist():
            grams = _image_grams(vgg, match_luminance(style_ys[j], content[i]))
            for layer in STYLE_LAYERS:
                blended[layer] = blended[layer] + mix[i, j] * grams[layer]
        for layer in STYLE_LAYERS:
            targets[layer].append(blended[layer])
    return {layer: torch.stack(values) for layer, values in targets.items()}


# ---------------------------------------------------------------------------- optimisation


def scale_schedule(height: int, width: int, max_single_scale: int) -> list[tuple[int, int]]:
    """Sizes to optimise at, coarse to fine: halve until the longer side is <= max_single_scale."""
    sizes = [(height, width)]
    while max(sizes[0]) > max_single_scale:
        h, w = sizes[0]
        sizes.insert(0, (math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def steps_per_scale(steps: int, num_scales: int) -> list[int]:
    """All steps at the coarsest scale, half of them at each finer one."""
    return [steps] + [max(1, steps // 2)] * (num_scales - 1)


def total_iterations(settings: TransferSettings, height: int, width: int) -> int:
    """Optimiser iterations ``stylise`` will run for one batch (for progress bars); 0 at strength 0."""
    if settings.strength == 0:
        return 0
    return sum(steps_per_scale(settings.steps, len(scale_schedule(height, width, settings.max_single_scale))))


def _objective(
    vgg: VGG19Features,
    content_features: torch.Tensor,
    targets: dict[str, torch.Tensor],
    settings: TransferSettings,
) -> Callable[[torch.Tensor], torch.Tensor]:
    factor = settings.strength_factor()

    def total_loss(x: torch.Tensor) -> torch.Tensor:
        features = vgg(_vgg_input(x))
        per_image = settings.content_weight * content_loss(features[CONTENT_LAYER], content_features)
        per_image = per_image + factor * settings.style_weight * style_loss(features, targets)
        if settings.tv_weight:
            per_image = per_image + factor * settings.tv_weight * tv_loss(x)
        # Summing keeps each image's gradient its own: the batch only shares the forward pass.
        return per_image.sum()

    return total_loss


def _run_lbfgs(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], steps: int, progress: Optional[Progress]) -> int:
    # Strong-Wolfe line search: the strength knob changes the loss scale by 10^3, and a fixed
    # first step (PyTorch's default) diverges at one end of that range or crawls at the other.
    optimizer = torch.optim.LBFGS([x], lr=1.0, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        return loss

    done = 0
    while done < steps:
        chunk = min(_LBFGS_CHUNK, steps - done)
        optimizer.param_groups[0].update(max_iter=chunk, max_eval=chunk * 3)
        optimizer.step(closure)
        now = optimizer.state[x].get("n_iter", done)
        if progress is not None:
            progress(now - done)
        if now == done:  # converged: gradient or change below L-BFGS' tolerance
            break
        done = now
    return done


def _run_adam(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], steps: int, lr: float, progress: Optional[Progress]) -> int:
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        optimizer.step()
        if progress is not None:
            progress(1)
    return steps


@torch.no_grad()
def _measure(vgg: VGG19Features, images: torch.Tensor, targets: dict[str, torch.Tensor], content_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = vgg(_vgg_input(images))
    return style_loss(features, targets), content_loss(features[CONTENT_LAYER], content_features)


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits, exactly what the PNG will hold."""
    return (images.clamp(0, 1) * 255).round() / 255


def stylise(
    vgg: VGG19Features,
    content: torch.Tensor,
    bank: StyleBank,
    settings: TransferSettings,
    progress: Optional[Progress] = None,
) -> TransferResult:
    """Refine a batch ``content`` [N, 3, H, W] (RGB in [0, 1]) toward its style blends.

    Strength 0 returns ``content`` itself (values untouched, no optimisation). Losses in the
    result are measured in the optimised space (luminance when ``preserve_color``) at full
    size, on the 8-bit output.
    """
    settings.validate()
    if content.ndim != 4 or content.shape[1] != 3:
        raise ValueError(f"content must be [N, 3, H, W], got {tuple(content.shape)}")
    if bank.mix.shape[0] != content.shape[0]:
        raise ValueError(f"style bank has {bank.mix.shape[0]} rows for {content.shape[0]} samples")
    space = luminance if settings.preserve_color else (lambda images: images)
    height, width = content.shape[-2:]
    full_targets = style_targets(vgg, bank, space(content), 1.0, settings.preserve_color)
    with torch.no_grad():
        full_content_features = vgg(_vgg_input(space(content)))[CONTENT_LAYER]
    before, _ = _measure(vgg, space(content), full_targets, full_content_features)
    if settings.strength == 0:
        return TransferResult(content, before.tolist(), before.tolist(), [0.0] * content.shape[0], 0, [])

    sizes = scale_schedule(height, width, settings.max_single_scale)
    x = space(content)
    iterations = 0
    for size, steps in zip(sizes, steps_per_scale(settings.steps, len(sizes))):
        scaled_content = _resize(space(content), size)
        if size == (height, width):
            targets, content_features = full_targets, full_content_features
        else:
            targets = style_targets(vgg, bank, scaled_content, size[0] / height, settings.preserve_color)
            with torch.no_grad():
                content_features = vgg(_vgg_input(scaled_content))[CONTENT_LAYER]
        # Start from the content at the coarsest scale, from the upsampled previous result after.
        # A fresh contiguous leaf: L-BFGS flattens the gradient with view(), which needs contiguity.
        x = _resize(x.detach(), size).clone(memory_format=torch.contiguous_format).requires_grad_(True)
        loss_fn = _objective(vgg, content_features, targets, settings)
        if settings.optimizer == "lbfgs":
            iterations += _run_lbfgs(x, loss_fn, steps, progress)
        else:
            iterations += _run_adam(x, loss_fn, steps, settings.lr, progress)

    refined = x.detach()
    if settings.preserve_color:
        refined = recombine_chroma(refined, content)
    output = quantise(refined)
    after, distance = _measure(vgg, space(output), full_targets, full_content_features)
    return TransferResult(output, before.tolist(), after.tolist(), distance.tolist(), iterations, sizes)
