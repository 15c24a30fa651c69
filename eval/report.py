"""The evaluation report: typed results per metric, written as one JSON file.

Every metric records the feature extractor it used, the identity of that extractor's
weights (file name + sha256 of the bytes actually loaded), its sample counts and seeds,
so two reports can be compared knowing whether they are comparable at all.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from atelier.common.fileio import atomic_write_text


@dataclass
class WeightsUsed:
    """A feature extractor and the weights file it ran with."""

    extractor: str
    file: str
    sha256: str


@dataclass
class FidelityResult:
    """FID / KID / precision-recall from torch-fidelity."""

    metrics: dict[str, float]  # fid, kid_mean, kid_std, precision, recall, f_score (those computed)
    num_generated: int
    num_reference: int
    seed: int
    kid_subset_size: Optional[int]
    kid_subsets: Optional[int]
    kid_subset_size_note: Optional[str]
    weights: list[WeightsUsed]
    reference_cache: Optional[str]  # cache name of the reference statistics (keyed by dataset content hash)


@dataclass
class DiversityResult:
    """Mean pairwise LPIPS of generated samples, with the training set's own value as reference."""

    lpips_diversity: float
    lpips_diversity_std: float
    reference_lpips_diversity: Optional[float]  # same statistic over training images
    num_samples: int
    num_reference: int
    num_pairs: int
    seed: int
    lpips_resolution: int
    weights: list[WeightsUsed]


@dataclass
class NearestNeighbour:
    """One generated sample and its nearest real work."""

    sample: int
    lpips_distance: float
    lpips_nearest: str  # training file name; "(flipped)" when the mirror image is nearest
    inception_distance: Optional[float]
    inception_nearest: Optional[str]
    flagged: bool
    seed: Optional[int] = None  # regenerates this sample: generate.py --seeds <seed> (None for a samples folder)


@dataclass
class MemorisationResult:
    """Nearest-real-work distances and the samples flagged as possible copies."""

    flagged_fraction: float
    num_flagged: int
    num_samples: int
    num_reference: int
    seed: int
    lpips_threshold: float
    inception_threshold: Optional[float]
    calibration: str  # how the thresholds were derived from the training set
    worst: list[NearestNeighbour]  # closest samples first
    grid: Optional[str]  # side-by-side image (sample | nearest real work) of the worst K
    lpips_resolution: int
    weights: list[WeightsUsed]


@dataclass
class SWDResult:
    """ProGAN's sliced Wasserstein distance (eval/swd.py), x 10^3, per pyramid level and their mean."""

    swd: float
    levels: dict[int, float]  # {resolution: SWD x 10^3}, finest first
    num_generated: int
    num_reference: int
    seed: int
    patches_per_image: int
    patch_size: int
    directions: int
    feature_space: str = "Laplacian-pyramid 7x7 RGB patches (no pretrained network)"


@dataclass
class DinoV2Result:
    """FD_DINOv2, and KID / precision-recall in the same DINOv2 feature space (eval/dinov2.py)."""

    metrics: dict[str, float]  # fd_dinov2, kid_dinov2_mean, kid_dinov2_std, precision_dinov2, recall_dinov2 (those computed)
    num_generated: int
    num_reference: int
    seed: int
    kid_subset_size: Optional[int]
    kid_subsets: Optional[int]
    feature_space: str
    weights: list[WeightsUsed]


@dataclass
class EvalReport:
    """Everything ``python -m eval`` measured for one generator against one dataset."""

    generator: Optional[str]  # checkpoint / export path as given, or None when scoring a samples folder
    generator_sha256: Optional[str]  # sha256 of generator_weights
    samples_dir: Optional[str]
    dataset: str
    dataset_content_sha256: str
    resolution: int
    created: str
    generator_weights: Optional[str] = None  # the safetensors file the path resolved to (a run dir's latest)
    # Hash of the tensors themselves (gan.checkpoint.weights_sha256): the same value generate.py
    # writes into each PNG as weights_sha256, so samples and reports can be matched up.
    generator_weights_sha256: Optional[str] = None
    psi: Optional[float] = None  # truncation of the generated samples (None when scoring a samples folder)
    fidelity: Optional[FidelityResult] = None
    diversity: Optional[DiversityResult] = None
    memorisation: Optional[MemorisationResult] = None
    swd: Optional[SWDResult] = None
    dinov2: Optional[DinoV2Result] = None
    extra: dict[str, Any] = field(default_factory=dict)


def to_json(report: Any) -> str:
    """Serialise a report dataclass (nested dataclasses become objects)."""
    return json.dumps(dataclasses.asdict(report), indent=2, sort_keys=False)


def write_report(report: EvalReport, path: str | Path) -> Path:
    """Write the report as JSON (atomically)."""
    return atomic_write_text(path, to_json(report) + "\n")
