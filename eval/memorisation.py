"""Memorisation check: is any generated sample a copy of one of the master's real works?

For every sample we find its nearest training image by LPIPS and by Inception pool3
features. Training runs with x-flips, so a memorised work may come out mirrored: the
reference set holds every training image and its mirror image.

Thresholds are calibrated on the training set itself. For each real work we take the
distance to its nearest *other* real work (leave-one-out, mirrors of itself excluded);
those distances say how close two genuinely different works of this master get. A
sample is flagged when, under either measure, it is closer to some real work than
``factor`` times the ``percentile``-th percentile of those distances (defaults: half the
5th percentile), i.e. clearly closer than distinct works ever are to each other.
Flagging on either measure errs towards showing a human a suspicious pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from eval.features import squared_distances
from gan.fileio import atomic_write
from eval.report import MemorisationResult, NearestNeighbour, WeightsUsed
from eval.samples import EvalInputError

log = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 5.0
DEFAULT_FACTOR = 0.5
MIN_TILE = 128  # grid tiles are upscaled to at least this many pixels so small samples stay visible

Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Measure:
    """One way to compare images: an embedding and how embedding distance becomes the reported distance."""

    name: str
    embed: Embed  # uint8 images [N, 3, H, W] -> [N, D]
    squared: bool  # True: the squared Euclidean distance is the metric itself (LPIPS); False: take the root


@dataclass
class NearestResult:
    distance: torch.Tensor  # [num_samples]
    index: torch.Tensor  # index into the training set
    flipped: torch.Tensor  # bool: the mirror image was nearest
    threshold: float
    calibration: torch.Tensor  # leave-one-out nearest distances inside the training set


def _to_metric(squared: torch.Tensor, measure: Measure) -> torch.Tensor:
    return squared if measure.squared else squared.sqrt()


def leave_one_out_nearest(train: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """Squared distance from each training embedding to its nearest other work (itself and its mirror excluded)."""
    if len(train) < 2:
        raise EvalInputError("the memorisation check needs at least 2 training images to calibrate its threshold")
    same = squared_distances(train, train)
    mirror = squared_distances(train, mirrored)
    eye = torch.eye(len(train), dtype=torch.bool)
    same[eye] = float("inf")
    mirror[eye] = float("inf")
    return torch.minimum(same.min(dim=1).values, mirror.min(dim=1).values)


def calibrate(loo: torch.Tensor, percentile: float, factor: float) -> float:
    """Flagging threshold: ``factor`` x the ``percentile``-th percentile of leave-one-out distances."""
    return float(factor * np.percentile(loo.numpy(), percentile))


def nearest_real(
    samples: torch.Tensor, train_images: torch.Tensor, measure: Measure, percentile: float, factor: float
) -> NearestResult:
    """Nearest training image (or its mirror) of each sample under one measure, plus the calibrated threshold."""
    train = measure.embed(train_images)
    mirrored = measure.embed(train_images.flip(-1))
    generated = measure.embed(samples)
    loo = _to_metric(leave_one_out_nearest(train, mirrored), measure)
    to_train = squared_distances(generated, train)
    to_mirror = squared_distances(generated, mirrored)
    best_plain, index_plain = to_train.min(dim=1)
    best_mirror, index_mirror = to_mirror.min(dim=1)
    flipped = best_mirror < best_plain
    distance = _to_metric(torch.where(flipped, best_mirror, best_plain), measure)
    index = torch.where(flipped, index_mirror, index_plain)
    return NearestResult(distance.float(), index, flipped, calibrate(loo, percentile, factor), loo.float())


def check_memorisation(
    samples: torch.Tensor,
    train_images: torch.Tensor,
    train_names: Sequence[str],
    lpips_measure: Measure,
    weights: list[WeightsUsed],
    seed: int,
    lpips_resolution: int,
    inception_measure: Optional[Measure] = None,
    worst_k: int = 16,
    grid_path: str | Path | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    factor: float = DEFAULT_FACTOR,
    sample_seeds: Optional[Sequence[int]] = None,
) -> MemorisationResult:
    """Flag samples that are near-copies of training images; optionally write the worst-K grid.

    ``sample_seeds[i]`` is the ``generate.py`` seed of sample i; it is recorded in each row
    (and labels the grid) so a flagged sample can be regenerated and looked at in full.
    """
    if len(samples) == 0:
        raise EvalInputError("the memorisation check needs at least 1 generated sample")
    if sample_seeds is not None and len(sample_seeds) != len(samples):
        raise EvalInputError(f"{len(sample_seeds)} seeds for {len(samples)} generated samples")
    by_lpips = nearest_real(samples, train_images, lpips_measure, percentile, factor)
    by_inception = (
        nearest_real(samples, train_images, inception_measure, percentile, factor) if inception_measure else None
    )
    flagged = by_lpips.distance < by_lpips.threshold
    # Rank by how far below its threshold a sample is, so both measures share one scale.
    closeness = by_lpips.distance / max(by_lpips.threshold, 1e-12)
    if by_inception is not None:
        flagged |= by_inception.distance < by_inception.threshold
        closeness = torch.minimum(closeness, by_inception.distance / max(by_inception.threshold, 1e-12))
    order = torch.argsort(closeness)[:worst_k].tolist()
    seed_of = (lambda i: int(sample_seeds[i])) if sample_seeds is not None else (lambda i: None)
    worst = [_neighbour(i, by_lpips, by_inception, train_names, bool(flagged[i]), seed_of(i)) for i in order]
    grid = None
    if grid_path is not None and order:
        labels = [f"seed {seed_of(i)}" if sample_seeds is not None else f"sample {i}" for i in order]
        grid = str(write_pairs_grid(samples, train_images, by_lpips, order, grid_path, labels))
    return MemorisationResult(
        flagged_fraction=float(flagged.float().mean()),
        num_flagged=int(flagged.sum()),
        num_samples=len(samples),
        num_reference=len(train_images),
        seed=seed,
        lpips_threshold=by_lpips.threshold,
        inception_threshold=by_inception.threshold if by_inception else None,
        calibration=(
            f"flag when nearest-real distance < {factor} x the {percentile:g}th percentile of the training set's "
            f"leave-one-out nearest-neighbour distances (mirror images included), by LPIPS or Inception"
        ),
        worst=worst,
        grid=grid,
        lpips_resolution=lpips_resolution,
        weights=weights,
    )


def _name(names: Sequence[str], result: NearestResult, i: int) -> str:
    name = names[int(result.index[i])]
    return f"{name} (flipped)" if bool(result.flipped[i]) else name


def _neighbour(i: int, by_lpips: NearestResult, by_inception, names, flagged: bool, seed: int | None) -> NearestNeighbour:
    return NearestNeighbour(
        sample=i,
        lpips_distance=float(by_lpips.distance[i]),
        lpips_nearest=_name(names, by_lpips, i),
        inception_distance=float(by_inception.distance[i]) if by_inception else None,
        inception_nearest=_name(names, by_inception, i) if by_inception else None,
        flagged=flagged,
        seed=seed,
    )


def _tile(image: torch.Tensor, size: int) -> Image.Image:
    tile = Image.fromarray(image.permute(1, 2, 0).numpy())
    return tile.resize((size, size), Image.NEAREST) if tile.width < size else tile.resize((size, size))


def pairs_grid(
    samples: torch.Tensor,
    train_images: torch.Tensor,
    nearest: NearestResult,
    order: Sequence[int],
    labels: Optional[Sequence[str]] = None,
) -> Image.Image:
    """Rows of (generated sample | nearest real work as matched, mirrored if the mirror matched).

    ``labels[row]`` names the sample of each row (default ``sample <index>``).
    """
    size = max(MIN_TILE, samples.shape[-1])
    gap, label = 4, 14
    grid = Image.new("RGB", (2 * size + 3 * gap, len(order) * (size + label + gap) + gap), "white")
    draw = ImageDraw.Draw(grid)
    for row, i in enumerate(order):
        real = train_images[int(nearest.index[i])]
        real = real.flip(-1) if bool(nearest.flipped[i]) else real
        top = gap + row * (size + label + gap)
        grid.paste(_tile(samples[i], size), (gap, top + label))
        grid.paste(_tile(real, size), (2 * gap + size, top + label))
        label_text = labels[row] if labels is not None else f"sample {i}"
        draw.text((gap, top), f"{label_text}  LPIPS {float(nearest.distance[i]):.3f}", fill="black")
    return grid


def write_pairs_grid(
    samples, train_images, nearest: NearestResult, order: Sequence[int], path: str | Path,
    labels: Optional[Sequence[str]] = None,
) -> Path:
    """Write :func:`pairs_grid` as a PNG via a temporary file and rename."""
    grid = pairs_grid(samples, train_images, nearest, order, labels)
    return atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
