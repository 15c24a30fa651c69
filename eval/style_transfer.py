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

Regions (``MaskedStyles`` instead of a ``StyleBank``): one style per masked region, each with
its own masked Gram loss and weight, and only the pixels of positive-weight regions free to
move; colour preservation then matches each style's luminance to its own region. The rules
are in :mod:`eval.masks`.

For callers that drive the refiner themselves (the studio): :func:`transfer` takes a content
tensor, style images or files, optional masks and a per-step callback that sees the
intermediate images and can stop the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from eval.masks import MaskedStyles, free_pixels, masked_gram, masked_moments, region_shares, resize_masks
from eval.vgg import VGG19Features

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
FEATURE_LAYERS = STYLE_LAYERS + (CONTENT_LAYER,)
OPTIMIZERS = ("lbfgs", "adam")
_EPS = 1e-12
# L-BFGS iterations per optimiser.step() call: the progress bar advances between calls.
_LBFGS_CHUNK = 10

Progress = Callable[[int], None]
# on_step(iterations done so far, current images [N, 3, h, w] RGB in [0, 1]) -> True to stop now.
StepCallback = Callable[[int, torch.Tensor], bool]


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
    # Masked runs: per image, each region's own style loss (None for a region with no pixels).
    region_loss_before: list[list[Optional[float]]] = field(default_factory=list)
    region_loss_after: list[list[Optional[float]]] = field(default_factory=list)
    stopped: bool = False  # the on_step callback asked to stop early


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


def style_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], share: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image style loss [N]: mean over style layers of |G - A|^2 / |A|^2.

    With ``share`` ([H, W]) the Gram is the region's masked Gram (:func:`eval.masks.masked_gram`).
    """
    terms = []
    for layer in STYLE_LAYERS:
        target = targets[layer]
        gram = gram_matrix(features[layer]) if share is None else masked_gram(features[layer], share)
        error = (gram - target).square().sum(dim=(1, 2))
        terms.append(error / target.square().sum(dim=(1, 2)).clamp_min(_EPS))
    return torch.stack(terms).mean(dim=0)


@dataclass
class StyleTerm:
    """One Gram loss term of the objective: its targets, the pixels it looks at, its weight.

    An unmasked run has one term (weight 1, the whole image); a masked run one per region with
    pixels, weighted by the style's weight times the region's area fraction.
    """

    targets: dict[str, torch.Tensor]  # layer -> [N, C, C]
    weight: float = 1.0
    share: Optional[torch.Tensor] = None  # [H, W] pixel shares at the working size; None = all
    region: Optional[int] = None


def objective_style_loss(features: dict[str, torch.Tensor], terms: Sequence[StyleTerm]) -> torch.Tensor:
    """The style part of the objective, per image [N]: sum of weight * style loss over the terms."""
    total = torch.zeros(next(iter(features.values())).shape[0], device=next(iter(features.values())).device)
    for term in terms:
        if term.weight > 0:
            total = total + term.weight * style_loss(features, term.targets, term.share)
    return total


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
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64)
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


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor, share: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Shift and scale a style luminance to the content's mean and std (Gatys et al. 2016b, Eq. 1).

    With ``share`` ([H, W], a region's pixel shares) the content's statistics are those of that
    region only, so each region's style takes the luminance of the part it paints.
    """
    style_std = style_y.std().clamp_min(1e-6)
    if share is None:
        mean, std = content_y.mean(), content_y.std()
    else:
        mean, std = masked_moments(content_y, share)
    return (style_y - style_y.mean()) / style_std * std + mean


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
        return {layer: torch.einsum("nb,bcd->ncd", mix, torch.stack([g[layer] for g in grams])) for layer in STYLE_LAYERS}
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


@torch.no_grad()
def style_terms(
    vgg: VGG19Features, styles: Union[StyleBank, MaskedStyles], content: torch.Tensor, scale: float, preserve_color: bool
) -> list[StyleTerm]:
    """The objective's Gram terms for a batch ``content`` (in the optimised space, at the working size).

    A :class:`StyleBank` gives one whole-image term; :class:`MaskedStyles` one term per region
    that has pixels here, its target the Gram of the region's whole style image (luminance
    matched to the region's own content when colours are preserved).
    """
    if isinstance(styles, StyleBank):
        return [StyleTerm(style_targets(vgg, styles, content, scale, preserve_color))]
    shares = region_shares(resize_masks(styles.masks.to(content.device), tuple(content.shape[-2:])))
    terms = []
    for region, image in enumerate(styles.images):
        area = float(shares[region].mean())
        if area <= 0:
            continue
        scaled = _scaled(image.to(content.device), scale)
        if preserve_color:
            style_y = luminance(scaled)
            per_sample = [_image_grams(vgg, match_luminance(style_y, content[i], shares[region])) for i in range(content.shape[0])]
            targets = {layer: torch.stack([g[layer] for g in per_sample]) for layer in STYLE_LAYERS}
        else:
            grams = _image_grams(vgg, scaled)
            targets = {layer: grams[layer].expand(content.shape[0], -1, -1) for layer in STYLE_LAYERS}
        terms.append(StyleTerm(targets, styles.weights[region] * area, shares[region], region))
    return terms


def _free_pixels(styles: Union[StyleBank, MaskedStyles], size: tuple[int, int], device: torch.device) -> Optional[torch.Tensor]:
    """``k`` [1, 1, h, w] of a masked run at ``size`` (None: every pixel is free)."""
    if isinstance(styles, StyleBank):
        return None
    return free_pixels(region_shares(resize_masks(styles.masks.to(device), size)), styles.weights)


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
    vgg: VGG19Features, content_features: torch.Tensor, terms: Sequence[StyleTerm], settings: TransferSettings
) -> Callable[[torch.Tensor], torch.Tensor]:
    factor = settings.strength_factor()

    def total_loss(x: torch.Tensor) -> torch.Tensor:
        features = vgg(_vgg_input(x))
        per_image = settings.content_weight * content_loss(features[CONTENT_LAYER], content_features)
        per_image = per_image + factor * settings.style_weight * objective_style_loss(features, terms)
        if settings.tv_weight:
            per_image = per_image + factor * settings.tv_weight * tv_loss(x)
        # Summing keeps each image's gradient its own: the batch only shares the forward pass.
        return per_image.sum()

    return total_loss


StopCheck = Callable[[int], bool]


def _run_lbfgs(
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    progress: Optional[Progress],
    should_stop: Optional[StopCheck] = None,
) -> tuple[int, bool]:
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
        if should_stop is not None and should_stop(done):
            return done, True
    return done, False


def _run_adam(
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    lr: float,
    progress: Optional[Progress],
    should_stop: Optional[StopCheck] = None,
) -> tuple[int, bool]:
    optimizer = torch.optim.Adam([x], lr=lr)
    for step in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        optimizer.step()
        if progress is not None:
            progress(1)
        if should_stop is not None and should_stop(step):
            return step, True
    return steps, False


@torch.no_grad()
def _measure(
    vgg: VGG19Features, images: torch.Tensor, terms: Sequence[StyleTerm], content_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Reported style loss [N] (the terms' weighted mean), content loss [N], each term's loss."""
    features = vgg(_vgg_input(images))
    losses = [style_loss(features, term.targets, term.share) for term in terms]
    total = sum(term.weight for term in terms)
    if len(terms) == 1 and terms[0].share is None:
        style = losses[0]
    elif total > 0:
        style = sum(term.weight * loss for term, loss in zip(terms, losses)) / total
    else:  # every region has weight 0: nothing is optimised, report the plain mean
        style = torch.stack(losses).mean(dim=0)
    return style, content_loss(features[CONTENT_LAYER], content_features), losses


def _region_table(
    styles: Union[StyleBank, MaskedStyles], terms: Sequence[StyleTerm], losses: Sequence[torch.Tensor], n: int
) -> list[list[Optional[float]]]:
    """Per image, each region's style loss (None for a region without pixels); [] when unmasked."""
    if isinstance(styles, StyleBank):
        return []
    table: list[list[Optional[float]]] = [[None] * len(styles.images) for _ in range(n)]
    for term, loss in zip(terms, losses):
        for i in range(n):
            table[i][term.region] = float(loss[i])
    return table


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits, exactly what the PNG will hold."""
    return (images.clamp(0, 1) * 255).round() / 255


def stylise(
    vgg: VGG19Features,
    content: torch.Tensor,
    bank: Union[StyleBank, MaskedStyles],
    settings: TransferSettings,
    progress: Optional[Progress] = None,
    on_step: Optional[StepCallback] = None,
) -> TransferResult:
    """Refine a batch ``content`` [N, 3, H, W] (RGB in [0, 1]) toward its style blends or regions.

    ``bank``: a :class:`StyleBank` (each sample's blend of style images) or
    :class:`~eval.masks.MaskedStyles` (one style per masked region, the same masks for the whole
    batch, resized to it). Strength 0 returns ``content`` itself (values untouched, no
    optimisation). Losses in the result are measured in the optimised space (luminance when
    ``preserve_color``) at full size, on the 8-bit output. ``progress(n)`` is told of every
    ``n`` iterations done; ``on_step(done, images)`` sees the current images (RGB, at the
    current scale) every few iterations and returns True to stop: the result is then the
    image as it stands, at full size.
    """
    settings.validate()
    if content.ndim != 4 or content.shape[1] != 3:
        raise ValueError(f"content must be [N, 3, H, W], got {tuple(content.shape)}")
    if isinstance(bank, StyleBank) and bank.mix.shape[0] != content.shape[0]:
        raise ValueError(f"style bank has {bank.mix.shape[0]} rows for {content.shape[0]} samples")
    space = luminance if settings.preserve_color else (lambda images: images)
    height, width = content.shape[-2:]
    n = content.shape[0]
    full_terms = style_terms(vgg, bank, space(content), 1.0, settings.preserve_color)
    with torch.no_grad():
        full_content_features = vgg(_vgg_input(space(content)))[CONTENT_LAYER]
    before, _, region_before = _measure(vgg, space(content), full_terms, full_content_features)
    regions_before = _region_table(bank, full_terms, region_before, n)
    if settings.strength == 0:
        return TransferResult(content, before.tolist(), before.tolist(), [0.0] * n, 0, [], regions_before, regions_before)

    sizes = scale_schedule(height, width, settings.max_single_scale)
    x = space(content)
    iterations, stopped = 0, False
    for size, steps in zip(sizes, steps_per_scale(settings.steps, len(sizes))):
        base = _resize(space(content), size)
        if size == (height, width):
            terms, content_features = full_terms, full_content_features
        else:
            terms = style_terms(vgg, bank, base, size[0] / height, settings.preserve_color)
            with torch.no_grad():
                content_features = vgg(_vgg_input(base))[CONTENT_LAYER]
        free = _free_pixels(bank, size, content.device)

        def compose(y: torch.Tensor, base: torch.Tensor = base, free: Optional[torch.Tensor] = free) -> torch.Tensor:
            # Masked runs move only the free pixels: x = content + k * (y - content).
            return y if free is None else base + free * (y - base)

        # Start from the content at the coarsest scale, from the upsampled previous result after.
        # A fresh contiguous leaf: L-BFGS flattens the gradient with view(), which needs contiguity.
        y = _resize(x.detach(), size).clone(memory_format=torch.contiguous_format).requires_grad_(True)
        objective = _objective(vgg, content_features, terms, settings)
        loss_fn = lambda leaf, objective=objective, compose=compose: objective(compose(leaf))  # noqa: E731
        should_stop = None
        if on_step is not None:

            def should_stop(done: int, y: torch.Tensor = y, compose=compose, size=size, offset: int = iterations) -> bool:
                with torch.no_grad():
                    current = compose(y)
                    if settings.preserve_color:
                        current = recombine_chroma(current, _resize(content, size))
                    return bool(on_step(offset + done, current.clamp(0, 1)))

        if settings.optimizer == "lbfgs":
            done, stopped = _run_lbfgs(y, loss_fn, steps, progress, should_stop)
        else:
            done, stopped = _run_adam(y, loss_fn, steps, settings.lr, progress, should_stop)
        iterations += done
        x = compose(y.detach())
        if stopped:
            sizes = sizes[: sizes.index(size) + 1]
            break

    if tuple(x.shape[-2:]) != (height, width):  # stopped early at a coarse scale
        base = space(content)
        free = _free_pixels(bank, (height, width), content.device)
        x = _resize(x, (height, width))
        x = x if free is None else base + free * (x - base)
    refined = x.detach()
    if settings.preserve_color:
        refined = recombine_chroma(refined, content)
    output = quantise(refined)
    after, distance, region_after = _measure(vgg, space(output), full_terms, full_content_features)
    return TransferResult(
        output,
        before.tolist(),
        after.tolist(),
        distance.tolist(),
        iterations,
        sizes,
        regions_before,
        _region_table(bank, full_terms, region_after, n),
        stopped,
    )


StyleSource = Union[str, Path, torch.Tensor]


def transfer(
    vgg: VGG19Features,
    content: torch.Tensor,
    styles: Sequence[StyleSource],
    weights: Optional[Sequence[float]] = None,
    masks: Optional[Sequence[Union[str, Path, torch.Tensor]]] = None,
    settings: TransferSettings = TransferSettings(),
    on_step: Optional[StepCallback] = None,
    progress: Optional[Progress] = None,
) -> TransferResult:
    """Refine one content image toward style images: the entry point for programs (the studio).

    ``vgg``: from :func:`eval.vgg.load_vgg19` with ``FEATURE_LAYERS`` (load it once, reuse it).
    ``content``: [3, H, W] or [1, 3, H, W] RGB in [0, 1], at the size to refine at.
    ``styles``: image files or [3, h, w] tensors in [0, 1] (shrink large ones first).
    ``weights``: one per style (default 1 each). Without masks they are blend weights
    (normalised to sum to 1; must be positive); with masks, each region's strength (0 keeps it).
    ``masks``: one per style, files or [H, W] tensors in [0, 1] (white = this style); resized to
    the content. ``on_step(done, images)`` is called every few iterations with the current
    images [1, 3, h, w] and returns True to stop early (the result is then the current image).
    Raises :class:`eval.refine_images.RefineInputError` (one line) for bad styles or masks.
    """
    from eval.masks import check_mask_set, load_mask  # noqa: PLC0415 - file decoding only when needed
    from eval.refine_images import RefineInputError, load_image  # noqa: PLC0415

    batch = content[None] if content.ndim == 3 else content
    if not styles:
        raise RefineInputError("no style image given")
    weights = [1.0] * len(styles) if weights is None else [float(w) for w in weights]
    if len(weights) != len(styles):
        raise RefineInputError(f"{len(weights)} weights for {len(styles)} styles")
    device = batch.device
    images = [s.float() if isinstance(s, torch.Tensor) else load_image(Path(s)) for s in styles]
    images = [image.to(device) for image in images]
    if masks is None:
        if any(not (w > 0 and math.isfinite(w)) for w in weights):
            raise RefineInputError(f"blend weights must be positive numbers, got {weights}")
        total = sum(weights)
        bank: Union[StyleBank, MaskedStyles] = StyleBank(images, torch.tensor([[w / total for w in weights]]))
    else:
        if len(masks) != len(styles):
            raise RefineInputError(f"{len(masks)} masks for {len(styles)} styles: give one mask per style")
        decoded = [m.float() if isinstance(m, torch.Tensor) else load_mask(Path(m)) for m in masks]
        stacked = torch.stack([resize_masks(m[None], tuple(batch.shape[-2:]))[0] for m in decoded]).to(device)
        check_mask_set(stacked)
        try:
            bank = MaskedStyles(images, stacked, tuple(weights))
        except ValueError as exc:
            raise RefineInputError(str(exc)) from exc
    return stylise(vgg, batch, bank, settings, progress=progress, on_step=on_step)
