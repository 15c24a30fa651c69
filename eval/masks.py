"""Regions for multi-style transfer: one style per region, each region given by a mask.

``--style a.jpg --mask a.png --style b.jpg --mask b.png`` pairs masks with styles in order
(the regional neural-style of Champandard 2016 and the Keras neural-style with masks). A mask
is a grey-level image: white = this style, black = not, grey = partly (soft edges).

How the regions enter the Gatys loss (:mod:`eval.style_transfer`):

* Shares. Where masks overlap, a pixel is split between them in proportion to their mask
  values, and a pixel's total share is its coverage ``c = min(1, sum of mask values)``:
  ``e_r = c * m_r / sum_k m_k``. A pixel no mask covers has no share in any region.
* Masked Gram. Region ``r``'s Gram matrix at a layer is the share-weighted average of the
  feature outer products, ``sum_p e_r(p) f(p) f(p)^T / (C * sum_p e_r(p))``, with ``e_r``
  area-averaged to that layer's grid. Normalising by the region's own area makes a small
  region's statistics comparable with a whole style image's (and a mask covering everything
  gives exactly the unmasked Gram).
* Region loss. ``w_r * a_r * Ls_r``: ``Ls_r`` is the relative Gram loss against region
  ``r``'s style, ``w_r`` the style's ``--style FILE:W`` weight (1 if not given, 0 allowed:
  that region keeps its content), ``a_r`` the region's area fraction, so every styled pixel
  pulls as hard as in an unmasked run and overlaps blend by weight.
* What may change. Only pixels with a share in a region of positive weight can move: the
  image is optimised as ``x = content + k * (y - content)`` with ``k`` the summed shares of
  positive-weight regions. Pixels no mask covers, and zero-weight regions, keep the content
  exactly (a warning names the uncovered fraction).

Everything here is plain tensors; the file checks run before any network loads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from atelier.common.images import BadImage, open_image_rgb
from eval.refine_images import RefineInputError

log = logging.getLogger(__name__)

# Below this summed mask value a pixel counts as uncovered (8-bit black is exactly 0).
_COVERED = 1e-6


@dataclass
class MaskedStyles:
    """One style image per region, its mask and its weight.

    ``images``: R style images, each [3, h, w] RGB in [0, 1] (sizes may differ).
    ``masks``: [R, H, W] in [0, 1], at any size (resized to the content inside the refiner).
    ``weights``: R non-negative style weights (1 = full strength, 0 = keep the content).
    """

    images: list[torch.Tensor]
    masks: torch.Tensor
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        count = len(self.images)
        if self.masks.ndim != 3 or self.masks.shape[0] != count:
            raise ValueError(f"masks must be [{count}, H, W] (one per style), got {tuple(self.masks.shape)}")
        if len(self.weights) != count:
            raise ValueError(f"{len(self.weights)} weights for {count} styles")
        if any(not (w >= 0 and math.isfinite(w)) for w in self.weights):
            raise ValueError(f"region weights must be finite and >= 0, got {self.weights}")
        check_mask_set(self.masks)


def check_mask_set(masks: torch.Tensor, names: Optional[Sequence[str]] = None) -> None:
    """Raise RefineInputError when no mask covers a single pixel (every mask black)."""
    if float(masks.amax()) <= _COVERED:
        listed = f" ({', '.join(names)})" if names else ""
        raise RefineInputError(f"every --mask is black{listed}: no region to style; white marks where a style goes")


def pair_masks(styles: Sequence[str], masks: Sequence[str]) -> None:
    """Masks pair with ``--style`` values in order: the counts must match."""
    if masks and len(masks) != len(styles):
        raise RefineInputError(f"{len(masks)} --mask for {len(styles)} --style: give one mask per style, in the same order")


def load_mask(path: Path) -> torch.Tensor:
    """Decode a mask image to [H, W] float in [0, 1] (its grey level; colour images are converted)."""
    try:
        image = open_image_rgb(path).convert("L")
    except BadImage as exc:
        raise RefineInputError(f"--mask {path} is not a readable image: {exc}") from exc
    except OSError as exc:
        raise RefineInputError(f"--mask {path} cannot be read: {exc.strerror or exc}") from exc
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).float() / 255


def load_masks(paths: Sequence[Path]) -> torch.Tensor:
    """Decode every mask; masks of different sizes are resized to the first one's (with a note)."""
    masks = [load_mask(path) for path in paths]
    size = tuple(masks[0].shape)
    for index, (path, mask) in enumerate(zip(paths, masks)):
        if tuple(mask.shape) != size:
            log.info("mask %s is %dx%d; resized to %dx%d like %s", path, mask.shape[1], mask.shape[0], size[1], size[0], paths[0])
            masks[index] = resize_masks(mask[None], size)[0]
    stacked = torch.stack(masks)
    check_mask_set(stacked, [str(path) for path in paths])
    return stacked


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[R, H, W] -> [R, h, w]: area averaging when shrinking (a layer cell's share is the mean of
    its pixels'), bilinear when enlarging; values stay in [0, 1]."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    shrinking = size[0] <= masks.shape[-2] and size[1] <= masks.shape[-1]
    mode = {"mode": "area"} if shrinking else {"mode": "bilinear", "align_corners": False}
    return F.interpolate(masks[:, None].float(), size=size, **mode)[:, 0].clamp(0, 1)


def mask_size_note(mask_size: tuple[int, int], content_size: tuple[int, int]) -> Optional[str]:
    """The note logged when the masks are resized to a sample's size (None when they match)."""
    if tuple(mask_size) == tuple(content_size):
        return None
    return f"masks are {mask_size[1]}x{mask_size[0]}, the image {content_size[1]}x{content_size[0]}: masks resized to fit"


def region_shares(masks: torch.Tensor) -> torch.Tensor:
    """Each pixel's share ``e_r`` in each region, [R, H, W]: coverage split by mask value."""
    total = masks.sum(dim=0, keepdim=True)
    coverage = total.clamp(max=1.0)
    return torch.where(total > _COVERED, masks * coverage / total.clamp_min(_COVERED), torch.zeros_like(masks))


def free_pixels(shares: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """``k`` [1, 1, H, W]: how much each pixel may move (summed shares of positive-weight regions)."""
    positive = torch.tensor([1.0 if w > 0 else 0.0 for w in weights], dtype=shares.dtype, device=shares.device)
    return (shares * positive.view(-1, 1, 1)).sum(dim=0)[None, None]


def uncovered_fraction(masks: torch.Tensor) -> float:
    """Fraction of pixels no mask covers at all."""
    return float((masks.sum(dim=0) <= _COVERED).float().mean())


def masked_gram(features: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Masked Gram matrices [N, C, C] of responses [N, C, h, w] for one region.

    ``share`` is the region's share map at full resolution, [H, W]; it is area-averaged to the
    layer's grid, and the Gram is normalised by the region's area there (times C, like the
    unmasked Gram of :func:`eval.style_transfer.gram_matrix`).
    """
    n, c, h, w = features.shape
    weights = resize_masks(share[None], (h, w))[0].reshape(1, 1, h * w).to(features)
    flat = features.reshape(n, c, h * w)
    area = weights.sum().clamp_min(_COVERED)
    return torch.bmm(flat * weights, flat.transpose(1, 2)) / (c * area)


def masked_moments(values: torch.Tensor, share: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share-weighted mean and standard deviation of one image's values [1, H, W] in a region."""
    weights = share.to(values)
    total = weights.sum().clamp_min(_COVERED)
    mean = (values * weights).sum() / total
    std = (((values - mean) ** 2) * weights).sum().div(total).sqrt()
    return mean, std
