"""LPIPS diversity: the mean LPIPS distance over all pairs of generated samples.

Higher means more varied pictures; a collapsed generator scores near 0. The same
statistic over the training images is reported beside it as the reference value a
healthy generator should approach.
"""

from __future__ import annotations

import numpy as np
import torch

from eval.features import LpipsEmbedder, squared_distances
from eval.report import DiversityResult, WeightsUsed
from eval.samples import EvalInputError


def pairwise_lpips_stats(embeddings: torch.Tensor) -> tuple[float, float, int]:
    """Mean and std of LPIPS over all unordered pairs of distinct images, and the pair count."""
    count = len(embeddings)
    if count < 2:
        raise EvalInputError(f"LPIPS diversity needs at least 2 samples, got {count}")
    distances = squared_distances(embeddings, embeddings)
    rows, cols = torch.triu_indices(count, count, offset=1)
    pairs = distances[rows, cols]
    return float(pairs.mean()), float(pairs.std(unbiased=False)), len(pairs)


def subsample(images: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """At most ``limit`` images, a seeded random choice when there are more."""
    if len(images) <= limit:
        return images
    index = np.sort(np.random.RandomState(seed).choice(len(images), limit, replace=False))
    return images[torch.from_numpy(index)]


def compute_diversity(
    generated: torch.Tensor, embedder: LpipsEmbedder, weights: WeightsUsed, seed: int, reference: torch.Tensor | None = None
) -> DiversityResult:
    """LPIPS diversity of uint8 ``generated`` images; ``reference`` (training images) gives the baseline.

    The reference uses at most as many images as were generated, so both numbers rest on
    the same number of pairs.
    """
    mean, std, pairs = pairwise_lpips_stats(embedder.embed(generated))
    reference_mean, num_reference = None, 0
    if reference is not None and len(reference) >= 2:
        chosen = subsample(reference, len(generated), seed)
        reference_mean, _, _ = pairwise_lpips_stats(embedder.embed(chosen))
        num_reference = len(chosen)
    return DiversityResult(
        lpips_diversity=mean,
        lpips_diversity_std=std,
        reference_lpips_diversity=reference_mean,
        num_samples=len(generated),
        num_reference=num_reference,
        num_pairs=pairs,
        seed=seed,
        lpips_resolution=embedder.resolution,
        weights=[weights],
    )
