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

from atelier.common.fileio import atomic_write
from eval.features import squared_distances
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


def nearest_real(samples: torch.Tensor, train_images: torch.Tensor, measure: Measure, percentile: float, factor: float) -> NearestResult:
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
    sample_files: Optional[Sequence[str]] = None,
    grid_xmp: Optional[str] = None,
) -> MemorisationResult:
    """Flag samples that are near-copies of training images; optionally write the worst-K grid.

    ``sample_seeds[i]`` is the ``generate.py`` seed of sample i; it is recorded in each row
    (and labels the grid) so a flagged sample can be regenerated and looked at in full;
    ``sample_files[i]`` names sample i's file when a samples folder was scored. ``grid_xmp`` is
    the disclosure packet the grid carries (it shows generated images beside real works).
    """
    if len(samples) == 0:
        raise EvalInputError("the memorisation check needs at least 1 generated sample")
    if sample_seeds is not None and len(sample_seeds) != len(samples):
        raise EvalInputError(f"{len(sample_seeds)} seeds for {len(samples)} generated samples")
    by_lpips = nearest_real(samples, train_images, lpips_measure, percentile, factor)
    by_inception = nearest_real(samples, train_images, inception_measure, percentile, factor) if inception_measure else None
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
        captions = [
            PairCaption(
                sample=_sample_label(i, sample_seeds, sample_files),
                real=_name(train_names, by_lpips, i),
                closeness=_closeness(i, by_lpips, by_inception),
                flagged=bool(flagged[i]),
            )
            for i in order
        ]
        grid = str(write_pairs_grid(samples, train_images, by_lpips, order, grid_path, captions, grid_xmp))
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


def _sample_label(i: int, seeds: Optional[Sequence[int]], files: Optional[Sequence[str]]) -> str:
    if seeds is not None:
        return f"seed {int(seeds[i])}"
    return files[i] if files is not None and i < len(files) else f"sample {i}"


def _closeness(i: int, by_lpips: NearestResult, by_inception: Optional[NearestResult]) -> str:
    """``LPIPS 0.119 (copy < 0.011)``, naming Inception when only that measure flagged the sample."""
    text = f"LPIPS {float(by_lpips.distance[i]):.3f} (copy < {by_lpips.threshold:.3f})"
    if by_inception is not None and by_inception.distance[i] < by_inception.threshold <= by_lpips.distance[i]:
        text += " by Inception"
    return text


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


@dataclass
class PairCaption:
    """The words over one row of the grid: whose sample, which real work, how close, flagged or not."""

    sample: str  # e.g. "seed 29" (regenerate with generate.py --seeds 29)
    real: str  # the nearest real work's file name, "(flipped)" when its mirror image matched
    closeness: str  # e.g. "LPIPS 0.119, flagged below 0.011"
    flagged: bool


FLAG_COLOUR = (200, 0, 0)
_HEADER, _LINE, _GAP = 16, 12, 4


def pairs_grid(
    samples: torch.Tensor, train_images: torch.Tensor, nearest: NearestResult, order: Sequence[int], captions: Sequence[PairCaption]
) -> Image.Image:
    """Rows of (generated sample | nearest real work as matched, mirrored if the mirror matched).

    A header names the columns; over each row the sample's name, the real work's file name and
    the LPIPS distance with the flagging threshold, in red with a red frame when flagged.
    """
    size = max(MIN_TILE, samples.shape[-1])
    row_height = 2 * _LINE + size + _GAP
    grid = Image.new("RGB", (2 * size + 3 * _GAP, _HEADER + len(order) * row_height + _GAP), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((_GAP, 2), "generated sample", fill="black")
    draw.text((2 * _GAP + size, 2), "nearest real work", fill="black")
    for row, (i, caption) in enumerate(zip(order, captions)):
        real = train_images[int(nearest.index[i])]
        real = real.flip(-1) if bool(nearest.flipped[i]) else real
        top = _HEADER + row * row_height
        colour = FLAG_COLOUR if caption.flagged else (0, 0, 0)
        draw.text((_GAP, top), caption.sample, fill=colour)
        draw.text((2 * _GAP + size, top), caption.real, fill=colour)
        draw.text((_GAP, top + _LINE), ("FLAGGED  " if caption.flagged else "") + caption.closeness, fill=colour)
        tiles_top = top + 2 * _LINE
        grid.paste(_tile(samples[i], size), (_GAP, tiles_top))
        grid.paste(_tile(real, size), (2 * _GAP + size, tiles_top))
        if caption.flagged:
            draw.rectangle([1, tiles_top - 2, grid.width - 2, tiles_top + size + 1], outline=FLAG_COLOUR, width=2)
    return grid


def write_pairs_grid(
    samples,
    train_images,
    nearest: NearestResult,
    order: Sequence[int],
    path: str | Path,
    captions: Sequence[PairCaption],
    xmp: Optional[str] = None,
) -> Path:
    """Write :func:`pairs_grid` as a PNG (with the disclosure packet ``xmp``) via a temporary file and rename."""
    from atelier.common.disclosure import png_info

    grid = pairs_grid(samples, train_images, nearest, order, captions)
    return atomic_write(path, lambda tmp: grid.save(tmp, format="PNG", pnginfo=png_info(xmp)))
