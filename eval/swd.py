"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ProGAN).

A quality score that needs no pretrained network, so it runs offline, in CI and during
training. For each pyramid level from the full resolution down to 16 px:

1. a Laplacian pyramid built with the 5x5 binomial filter (``[1 4 6 4 1]^T [1 4 6 4 1] / 256``,
   reflected borders); the 16 px level is the low-pass residual, every finer level a band;
2. 128 random 7x7 patches per image per level (centres drawn so a patch lies inside);
3. each set's descriptors (patch x channel x 7 x 7) normalised per level and per channel
   over all its patches: mean 0, standard deviation 1 (as ProGAN, real and generated sets
   each by their own statistics);
4. 4 x 128 random unit directions; along each, the 1-D Wasserstein-1 distance of the two
   sets' projections (mean |difference| of the sorted projections);
5. the mean over directions, x 10^3, per level, and the mean over levels.

Public entry point::

    from eval.swd import swd
    result = swd(real_images, fake_images, seed=0)
    result["swd"]            # mean over levels, x 10^3
    result["levels"]         # {resolution: SWD x 10^3}, finest first, e.g. {32: ..., 16: ...}

``real_images`` / ``fake_images``: uint8 numpy arrays [N, H, W, 3] (NHWC, as PIL and
imageio give them), torch uint8 tensors [N, 3, H, W], torch float tensors [N, 3, H, W] in
[-1, 1] (a generator's output), or any sequence / Dataset of uint8 [3, H, W] tensors.
Images are square with a power-of-two side of at least 16 px; both sets the same size.

Determinism and order: the directions come from ``seed``; each image's patch positions
come from ``seed`` and a hash of the image's own pixels, and descriptors are put in
content order before anything is summed, so the result is bit-identical for the same seed
whatever order the images arrive in, and an image scored twice gets the same patches.
The two sets may hold different numbers of images: W1 is then taken between the two
empirical distributions (quantile functions), which for equal sizes is exactly the
sorted-difference mean.

Per-set normalisation (ProGAN's choice) makes SWD blind to a per-channel affine change of
the whole set (a uniform brightness or contrast change per channel); it sees changes of
the shape of each channel's distribution, of the correlation between channels and of
texture at every scale (a blur moves the band-pass levels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

PATCH_SIZE = 7
PATCHES_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
SCALE = 1e3  # ProGAN reports SWD x 10^3

_BINOMIAL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
BINOMIAL_5x5 = (torch.outer(_BINOMIAL_1D, _BINOMIAL_1D) / 256.0).to(torch.float32)


class SWDInputError(ValueError):
    """Images SWD cannot score (wrong shape, too small, mismatched sizes); one line."""


# --------------------------------------------------------------------------- the pyramid


def _filter(x: torch.Tensor, gain: float) -> torch.Tensor:
    """Depthwise 5x5 binomial filter with reflected borders (cv2 / scipy 'mirror' borders)."""
    channels = x.shape[1]
    kernel = (BINOMIAL_5x5 * gain).to(x.device, x.dtype).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur then keep every second pixel: [N, C, H, W] -> [N, C, H/2, W/2] (cv2.pyrDown)."""
    return _filter(x, 1.0)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Zero-insert to twice the size, then blur with 4x the filter (cv2.pyrUp): keeps the mean."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _filter(up, 4.0)


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first; the last level is the low-pass residual.

    The levels sum back to ``x`` (upsampling each coarser one), so nothing is lost.
    """
    levels = [x]
    for _ in range(1, num_levels):
        levels.append(pyr_down(levels[-1]))
        levels[-2] = levels[-2] - pyr_up(levels[-1])
    return levels


def pyramid_resolutions(resolution: int, min_resolution: int = MIN_RESOLUTION) -> list[int]:
    """The level sizes SWD scores: ``resolution``, halved down to ``min_resolution`` (ProGAN: 16)."""
    if resolution < min_resolution or resolution & (resolution - 1):
        raise SWDInputError(f"SWD needs square images with a power-of-two side of at least {min_resolution} px, got {resolution}")
    out = []
    while resolution >= min_resolution:
        out.append(resolution)
        resolution //= 2
    return out


# --------------------------------------------------------------------------- inputs


def _as_batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of images as uint8 or float [-1, 1] NCHW tensors (the input's own dtype)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise SWDInputError(f"numpy images must be [N, H, W, 3] (NHWC), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise SWDInputError(f"numpy images must be uint8, got {images.dtype}")
        for start in range(0, len(images), batch_size):
            yield torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
        return
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise SWDInputError(f"tensor images must be [N, 3, H, W] (NCHW), got shape {tuple(images.shape)}")
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    batch: list[torch.Tensor] = []
    for item in (images[i] for i in range(len(images))) if hasattr(images, "__getitem__") else images:
        item = torch.as_tensor(item)
        if item.dim() != 3 or item.shape[0] != 3:
            raise SWDInputError(f"each image must be [3, H, W], got shape {tuple(item.shape)}")
        batch.append(item)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _to_float255(batch: torch.Tensor) -> torch.Tensor:
    """uint8 stays on its 0..255 scale; float [-1, 1] is mapped onto it."""
    if batch.dtype == torch.uint8:
        return batch.float()
    if not batch.is_floating_point():
        raise SWDInputError(f"images must be uint8 or float, got {batch.dtype}")
    return (batch.float() + 1.0) * 127.5


def _image_digest(image: torch.Tensor, seed: int) -> bytes:
    """A stable key for one image's pixels and the seed: decides its patches and its place in the set."""
    data = image.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16, key=seed.to_bytes(8, "little", signed=True)).digest()


# --------------------------------------------------------------------------- descriptors


@dataclass
class PatchDescriptors:
    """One image set's normalised patch descriptors per pyramid level (finest first)."""

    resolutions: list[int]
    levels: list[torch.Tensor]  # each [num_images * patches_per_image, 3 * patch_size^2], mean 0 / std 1 per channel
    num_images: int
    seed: int
    patches_per_image: int
    patch_size: int


def patch_positions(digest: bytes, resolutions: Sequence[int], count: int, patch_size: int) -> list[np.ndarray]:
    """Top-left corners [count, 2] (y, x) per level for one image, drawn from its digest."""
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return [rng.integers(0, size - patch_size + 1, size=(count, 2)) for size in resolutions]


def _extract(level: torch.Tensor, corners: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patches [B * P, C, k, k] from a level [B, C, S, S] at corners [B, P, 2]."""
    b, c = level.shape[:2]
    offsets = torch.arange(patch_size, device=level.device)
    rows = (corners[..., 0, None] + offsets)[:, :, None, :, None]  # [B, P, 1, k, 1]
    cols = (corners[..., 1, None] + offsets)[:, :, None, None, :]  # [B, P, 1, 1, k]
    image = torch.arange(b, device=level.device)[:, None, None, None, None]
    channel = torch.arange(c, device=level.device)[None, None, :, None, None]
    return level[image, channel, rows, cols].reshape(-1, c, patch_size, patch_size)


def normalise(patches: torch.Tensor) -> torch.Tensor:
    """[N, C, k, k] -> [N, C*k*k], each channel at mean 0 and std 1 over all patches and pixels.

    A channel that is constant across the whole set (std 0) is only centred: ProGAN would
    divide by zero there.
    """
    patches = patches.double()
    mean = patches.mean(dim=(0, 2, 3), keepdim=True)
    std = patches.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((patches - mean) / std).float().reshape(patches.shape[0], -1)


def describe(
    images: Any,
    seed: int = 0,
    patches_per_image: int = PATCHES_PER_IMAGE,
    patch_size: int = PATCH_SIZE,
    min_resolution: int = MIN_RESOLUTION,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> PatchDescriptors:
    """Laplacian-pyramid patch descriptors of one image set (see the module docstring for inputs)."""
    device = torch.device(device)
    resolutions: Optional[list[int]] = None
    blocks: list[tuple[bytes, list[torch.Tensor]]] = []  # (image digest, per-level patches of that image)
    for batch in _as_batches(images, batch_size):
        h, w = batch.shape[-2:]
        if h != w:
            raise SWDInputError(f"SWD needs square images, got {w}x{h}")
        if resolutions is None:
            resolutions = pyramid_resolutions(int(h), min_resolution)
            if patch_size > resolutions[-1]:
                raise SWDInputError(f"patch size {patch_size} is larger than the {resolutions[-1]} px level")
        elif int(h) != resolutions[0]:
            raise SWDInputError(f"images of different sizes in one set: {resolutions[0]} and {int(h)} px")
        digests = [_image_digest(image, seed) for image in batch]
        corners = [patch_positions(d, resolutions, patches_per_image, patch_size) for d in digests]
        pyramid = laplacian_pyramid(_to_float255(batch).to(device), len(resolutions))
        per_level = []
        for index, level in enumerate(pyramid):
            where = torch.from_numpy(np.stack([c[index] for c in corners])).to(device)
            per_level.append(_extract(level, where, patch_size).view(len(digests), patches_per_image, 3, patch_size, patch_size))
        for i, digest in enumerate(digests):
            blocks.append((digest, [level[i] for level in per_level]))
    if not blocks:
        raise SWDInputError("no images to score")
    blocks.sort(key=lambda block: block[0])  # content order: the result cannot depend on input order
    levels = [normalise(torch.cat([block[1][i] for block in blocks])) for i in range(len(resolutions))]
    return PatchDescriptors(resolutions, levels, len(blocks), seed, patches_per_image, patch_size)


# --------------------------------------------------------------------------- the distance


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random unit vectors in R^dim as the columns of a [dim, count] matrix."""
    directions = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    return (directions / directions.norm(dim=0, keepdim=True)).float()


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending. On the CPU numpy's vectorised sort is far faster than torch's."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.detach().numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _quantile_steps(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For two sample sizes: the widths of the intervals of t in (0, 1] on which both empirical
    quantile functions are constant, and the sorted-sample index of each on that interval.

    Both quantile functions step at multiples of 1/n and of 1/m, whatever the values are,
    so this is computed once per pair of sizes. Midpoints keep floor() off the step edges.
    """
    edges = np.concatenate([[0.0], np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)])
    middle = (edges[:-1] + edges[1:]) / 2
    index_a = np.minimum((middle * n).astype(np.int64), n - 1)
    index_b = np.minimum((middle * m).astype(np.int64), m - 1)
    return np.diff(edges), index_a, index_b


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical distributions of each row of ``a`` [K, n] and ``b`` [K, m] -> [K].

    W1 is the integral over t in (0, 1) of |Q_a(t) - Q_b(t)|, the quantile functions being the
    sorted samples. Equal sizes: the mean absolute difference of the sorted values (ProGAN's
    formula); otherwise the same integral over the intervals where both quantiles are constant.
    """
    a, b = _sort_rows(a), _sort_rows(b)
    if a.shape[1] == b.shape[1]:
        return (a - b).abs().mean(dim=1)
    widths, index_a, index_b = _quantile_steps(a.shape[1], b.shape[1])
    if a.device.type == "cpu":
        steps = np.abs(np.take(a.numpy(), index_a, axis=1) - np.take(b.numpy(), index_b, axis=1))
        return torch.from_numpy(steps @ widths.astype(np.float32))
    steps = (a[:, torch.from_numpy(index_a).to(a.device)] - b[:, torch.from_numpy(index_b).to(a.device)]).abs()
    return steps @ torch.from_numpy(widths).to(a.device, a.dtype)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Mean over the columns of ``directions`` [D, K] of the 1-D W1 of ``a @ d`` and ``b @ d``.

    ``a`` [n, D] and ``b`` [m, D] are point sets. Directions are processed ``chunk`` at a
    time, so memory stays (n + m) x chunk floats.
    """
    directions = directions.to(a.device)
    values = []
    for i in range(0, directions.shape[1], chunk):
        d = directions[:, i : i + chunk].T.contiguous()  # [chunk, D]
        values.append(wasserstein_1d(d @ a.T, d @ b.T))
    return torch.cat(values).double().mean()


def swd_between(
    real: PatchDescriptors, fake: PatchDescriptors, seed: int = 0, dir_repeats: int = DIR_REPEATS, dirs_per_repeat: int = DIRS_PER_REPEAT
) -> dict[str, Any]:
    """SWD x 10^3 per level and their mean, from two sets' descriptors."""
    if real.resolutions != fake.resolutions:
        raise SWDInputError(f"the sets have different resolutions: {real.resolutions[0]} vs {fake.resolutions[0]} px")
    generator = torch.Generator().manual_seed(seed)
    levels = {}
    for resolution, a, b in zip(real.resolutions, real.levels, fake.levels):
        directions = random_directions(a.shape[1], dir_repeats * dirs_per_repeat, generator)  # new ones per level
        levels[resolution] = float(sliced_wasserstein(a, b, directions)) * SCALE
    return {
        "swd": float(np.mean(list(levels.values()))),
        "levels": levels,
        "num_real": real.num_images,
        "num_fake": fake.num_images,
        "seed": seed,
        "patches_per_image": real.patches_per_image,
        "patch_size": real.patch_size,
        "directions": dir_repeats * dirs_per_repeat,
    }


def swd(
    real_images: Any,
    fake_images: Any,
    seed: int = 0,
    *,
    patches_per_image: int = PATCHES_PER_IMAGE,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """ProGAN's SWD between two image sets; returns a dict (all SWD values x 10^3).

    Keys: ``swd`` (mean over levels), ``levels`` ({resolution: value}, finest first),
    ``num_real``, ``num_fake``, ``seed``, ``patches_per_image``, ``patch_size``,
    ``directions``. Inputs: see the module docstring. Same seed, same images: the same
    value, bit for bit, in any image order. Raises :class:`SWDInputError` (a ValueError).
    """
    options = dict(seed=seed, patches_per_image=patches_per_image, batch_size=batch_size, device=device)
    real = describe(real_images, **options)
    fake = describe(fake_images, **options)
    return swd_between(real, fake, seed, dir_repeats, dirs_per_repeat)
