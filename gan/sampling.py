"""Sampling a trained generator: seeds -> latents -> images, grids and latent walks.

Determinism: seed ``s`` always gives the same latent ``z`` (``numpy.random.RandomState(s)``,
the convention of NVIDIA's StyleGAN2-ADA ``generate.py``, so seeds mean the same thing there
and here), whatever the batch or the other seeds; so is the image, up to float rounding
(the batch size changes the order of sums, so a rare pixel can differ by one level). With
``noise_mode="random"`` the per-layer noise of image ``s`` is drawn from a torch RNG seeded
with ``s`` too, so "random" noise is also reproducible per seed (on the same device type;
CPU and CUDA RNGs differ).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from atelier.common.disclosure import write_gif, write_png
from gan.layers import NOISE_MODES

MAX_SEED = 2**32 - 1  # numpy RandomState accepts seeds in [0, 2**32)
MAX_SEEDS = 100_000  # a typo like 0-9999999 should fail fast, not fill the disk


class SeedError(ValueError):
    """A seed list could not be parsed; the message names the offending part."""


# --------------------------------------------------------------------------- seeds and latents


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0-63,70,80-82"`` into seeds in the given order (ranges inclusive, duplicates dropped)."""
    seeds: list[int] = []
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise SeedError("no seeds given (expected e.g. 0-63,70)")
    for part in parts:
        if not part:
            raise SeedError(f"empty item in seed list {text!r}")
        lo_text, sep, hi_text = part.partition("-")
        lo = _parse_seed(lo_text, part)
        hi = _parse_seed(hi_text, part) if sep else lo
        if hi < lo:
            raise SeedError(f"seed range {part!r} runs backwards")
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
            raise SeedError(f"too many seeds (more than {MAX_SEEDS}) in {text!r}")
        seeds.extend(range(lo, hi + 1))
    return list(dict.fromkeys(seeds))


def _parse_seed(token: str, part: str) -> int:
    token = token.strip()
    if not (token.isascii() and token.isdigit()):
        raise SeedError(f"bad seed item {part!r}: seeds are non-negative integers or ranges like 0-63")
    seed = int(token)
    if seed > MAX_SEED:
        raise SeedError(f"seed {seed} is too large (max {MAX_SEED})")
    return seed


def latents_for_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """Latents ``z`` [len(seeds), z_dim] (float32, CPU); row i depends only on seeds[i]."""
    rows = [np.random.RandomState(int(seed)).randn(z_dim) for seed in seeds]
    return torch.from_numpy(np.stack(rows).astype(np.float32)) if rows else torch.zeros(0, z_dim)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latents (last dim); linear when they are nearly parallel."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    if float(sin.abs().min()) < 1e-6:  # sin(omega) ~ 0 would divide by zero; lerp is exact enough there
        return torch.lerp(a64, b64, t).to(a.dtype)
    out = (torch.sin((1.0 - t) * omega) / sin) * a64 + (torch.sin(t * omega) / sin) * b64
    return out.to(a.dtype)


# --------------------------------------------------------------------------- running the generator


def to_uint8_images(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in ~[-1, 1] -> uint8 [N, H, W, C]."""
    # +128 rather than +127.5 rounds to nearest when the cast truncates (NVIDIA's convention).
    pixels = (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


@contextmanager
def _seeded_rng(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _synthesize(G, ws: torch.Tensor, noise_mode: str, noise_seeds: Sequence[int]) -> torch.Tensor:
    if noise_mode != "random":
        return G.synthesis(ws, noise_mode=noise_mode)
    # One image at a time so image i's noise comes from an RNG seeded with noise_seeds[i] alone,
    # independent of the batch it happens to be in.
    images = []
    for w, noise_seed in zip(ws, noise_seeds):
        with _seeded_rng(int(noise_seed), ws.device):
            images.append(G.synthesis(w[None], noise_mode="random"))
    return torch.cat(images)


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}")


def _device_of(G, device) -> torch.device:
    if device is None:
        return next(G.parameters()).device
    return torch.device(device)


def iter_images(
    G,
    seeds: Sequence[int],
    psi: float = 1.0,
    noise_mode: str = "const",
    batch: int = 16,
    device: str | torch.device | None = None,
    truncation_cutoff: Optional[int] = None,
    on_batch: Optional[Callable[[int], None]] = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(seed, uint8 HWC image)`` for each seed, ``batch`` seeds per forward pass.

    ``G`` is moved to ``device`` (default: where it already is). ``on_batch(n)`` is called
    after each batch of n images (progress bars).
    """
    _check_noise_mode(noise_mode)
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    device = _device_of(G, device)
    G.to(device)
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start : start + batch])
        z = latents_for_seeds(chunk, G.z_dim).to(device)
        with torch.no_grad():
            ws = G.mapping(z, psi=psi, truncation_cutoff=truncation_cutoff)
            images = to_uint8_images(_synthesize(G, ws, noise_mode, chunk))
        yield from zip(chunk, images)
        if on_batch is not None:
            on_batch(len(chunk))


def generate_images(
    G,
    seeds: Sequence[int],
    psi: float = 1.0,
    noise_mode: str = "const",
    batch: int = 16,
    device: str | torch.device | None = None,
    truncation_cutoff: Optional[int] = None,
) -> list[np.ndarray]:
    """uint8 HWC images, one per seed, in seed order (see :func:`iter_images`)."""
    return [image for _, image in iter_images(G, seeds, psi, noise_mode, batch, device, truncation_cutoff)]


def interpolate(
    G,
    seed_a: int,
    seed_b: int,
    frames: int,
    psi: float = 1.0,
    noise_mode: str = "const",
    batch: int = 16,
    device: str | torch.device | None = None,
    on_batch: Optional[Callable[[int], None]] = None,
) -> list[np.ndarray]:
    """A latent walk from seed_a to seed_b (both included) as ``frames`` uint8 HWC images.

    The walk is a spherical interpolation in z: Gaussian latents concentrate on a shell of
    radius ~sqrt(z_dim), and slerp stays on it where a straight line would cut through the
    low-density centre the mapping network never saw in training. Truncation (psi) is then
    applied to each frame's w. With ``noise_mode="random"`` all frames share one noise draw
    (seeded by seed_a), so only the latent moves and the walk does not flicker.
    """
    _check_noise_mode(noise_mode)
    if frames < 2:
        raise ValueError(f"an interpolation needs at least 2 frames, got {frames}")
    device = _device_of(G, device)
    G.to(device)
    z_a, z_b = latents_for_seeds([seed_a, seed_b], G.z_dim)
    steps = np.linspace(0.0, 1.0, frames)
    out: list[np.ndarray] = []
    for start in range(0, frames, batch):
        z = torch.stack([slerp(z_a, z_b, float(t)) for t in steps[start : start + batch]]).to(device)
        with torch.no_grad():
            ws = G.mapping(z, psi=psi)
            out.extend(to_uint8_images(_synthesize(G, ws, noise_mode, [seed_a] * len(z))))
        if on_batch is not None:
            on_batch(len(z))
    return out


# --------------------------------------------------------------------------- grids and files


def make_grid(images: Sequence[np.ndarray], cols: Optional[int] = None) -> np.ndarray:
    """Tile equally sized HWC images row by row into one image; empty cells stay black.

    ``cols`` defaults to ceil(sqrt(n)), giving a near-square grid.
    """
    if len(images) == 0:
        raise ValueError("make_grid needs at least one image")
    shape = images[0].shape
    if any(image.shape != shape for image in images):
        raise ValueError("make_grid needs images of one size")
    cols = cols or math.ceil(math.sqrt(len(images)))
    if cols <= 0:
        raise ValueError(f"cols must be positive, got {cols}")
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    h, w = shape[:2]
    grid = np.zeros((rows * h, cols * w) + tuple(shape[2:]), dtype=images[0].dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return grid


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim == 3 and image.shape[2] == 1:  # single-channel generators
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


def save_png(image: np.ndarray, path: str | os.PathLike, text: Optional[Mapping[str, str]] = None, xmp: Optional[str] = None) -> Path:
    """Save a uint8 HWC image as PNG with ``text`` as tEXt chunks and ``xmp`` (the disclosure packet,
    :func:`atelier.common.disclosure.build_xmp`) as iTXt ``XML:com.adobe.xmp``; byte-identical for
    equal inputs."""
    # No fsync: samples are cheap to regenerate, and a grid of thousands would pay it per file.
    return write_png(_to_pil(image), path, xmp, text, fsync=False)


def run_xmp(run_dir: str | os.PathLike, G, settings: Optional[Mapping[str, object]] = None) -> str:
    """The disclosure packet for images a training run's generator makes (sample grids): the run's
    provenance (its config.yaml's dataset, gan.export.run_provenance) and ``G``'s weights hash."""
    from atelier.common.disclosure import build_xmp
    from atelier.common.hashing import weights_sha256
    from gan.export import run_provenance

    return build_xmp(run_provenance(run_dir), weights_sha256(G), settings)


def save_gif(
    frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 24.0, xmp: Optional[str] = None, comment: Optional[str] = None
) -> Path:
    """Save frames as a looping GIF at ``fps`` frames per second (GIF timing has 10 ms steps), with
    the ``xmp`` disclosure packet (XMP's GIF application extension) and ``comment`` (e.g. the
    disclosure sentence) as the GIF comment viewers show."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pictures = [_to_pil(frame) for frame in frames]
    if not pictures:
        raise ValueError("save_gif needs at least one frame")
    return write_gif(pictures, path, max(10, round(1000.0 / fps)), xmp, comment)
