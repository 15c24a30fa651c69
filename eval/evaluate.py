"""One evaluation of a generator (or a folder of its samples) against its training set.

Shared by the ``python -m eval`` command and the in-training hook: pick metrics, build
each feature extractor once from resolved weights, and return an :class:`EvalReport`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset, Subset

from atelier.common.hashing import weights_sha256
from eval import weights as W
from eval.features import LpipsEmbedder, inception_extractor, inception_features, lpips_model
from eval.fidelity import compute_fidelity
from eval.lpips_diversity import compute_diversity
from eval.memorisation import DEFAULT_FACTOR, DEFAULT_PERCENTILE, Measure, check_memorisation
from eval.report import EvalReport, SWDResult, WeightsUsed
from eval.samples import EvalInputError, FolderImages, GeneratedImages, load_reference, stack_images

log = logging.getLogger(__name__)

ALL_METRICS = ("fid", "kid", "pr", "lpips_div", "nn", "swd", "fd_dinov2", "kid_dinov2", "pr_dinov2")
DINOV2_METRICS = ("fd_dinov2", "kid_dinov2", "pr_dinov2")
MAX_IMAGE_SIZE_NN = 256  # LPIPS / nearest-neighbour images are held in memory at most at this size


@dataclass
class EvalOptions:
    """What to measure and how; the CLI's options."""

    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "pr", "lpips_div", "nn"])
    num_samples: int = 10000  # generated images for FID/KID/PR and SWD
    lpips_samples: int = 1000  # generated images for LPIPS diversity and the memorisation check
    seed: int = 0
    weights_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    kid_subset_size: Optional[int] = None
    kid_subsets: int = 100
    lpips_net: str = "alex"
    dinov2_model: str = "vitl14"  # eval.dinov2.MODELS
    lpips_resolution: int = 128
    nn_percentile: float = DEFAULT_PERCENTILE
    nn_factor: float = DEFAULT_FACTOR
    worst_k: int = 16
    grid_path: Optional[str] = None
    batch_size: int = 32
    psi: float = 1.0
    device: str = "cpu"
    verbose: bool = False


def parse_metrics(text: str | list[str]) -> list[str]:
    """'fid,kid' -> ['fid', 'kid']; an unknown name is a one-line error."""
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise EvalInputError(f"unknown metric(s) {unknown or names}: choose from {', '.join(ALL_METRICS)}")
    return list(dict.fromkeys(names))


def evaluate(
    dataset: str | Path,
    options: EvalOptions,
    generator: Optional[torch.nn.Module] = None,
    samples: Optional[Dataset] = None,
    generator_path: Optional[str] = None,
    samples_dir: Optional[str] = None,
) -> EvalReport:
    """Score ``generator`` (or a uint8 Dataset of ``samples``) against the prepared ``dataset``."""
    if (generator is None) == (samples is None):
        raise EvalInputError("give exactly one of a generator or a samples folder")
    metrics = parse_metrics(options.metrics)
    resolution = generator.resolution if generator is not None else samples.resolution
    reference = load_reference(dataset, expected_resolution=resolution)
    W.resolve_all(weights_needed(metrics, options.lpips_net, options.dinov2_model), options.weights_dir)
    device = torch.device(options.device)
    weights_file = _generator_weights_file(generator_path)
    report = EvalReport(
        generator=generator_path,
        generator_weights=str(weights_file) if weights_file else None,
        generator_sha256=W.file_sha256(weights_file) if weights_file else None,
        generator_weights_sha256=weights_sha256(generator) if generator is not None else None,
        samples_dir=samples_dir,
        dataset=str(dataset),
        dataset_content_sha256=reference.content_sha256,
        resolution=resolution,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    fidelity_metrics = [m for m in metrics if m in ("fid", "kid", "pr")]
    perceptual = "lpips_div" in metrics or "nn" in metrics
    if generator is not None:
        report.psi = options.psi
        feature_metrics = bool(fidelity_metrics) or "swd" in metrics or bool(set(DINOV2_METRICS) & set(metrics))
        samples = _generated(generator, options, fidelity=feature_metrics, perceptual=perceptual)
    if fidelity_metrics:
        fidelity_input = samples
        if len(samples) > options.num_samples:  # a generator's stream may run longer for LPIPS; a folder may hold more
            fidelity_input = Subset(samples, range(options.num_samples))
        report.fidelity = compute_fidelity(
            fidelity_input,
            reference,
            fidelity_metrics,
            num_samples=options.num_samples,
            seed=options.seed,
            weights_dir=options.weights_dir,
            cache_dir=options.cache_dir,
            kid_subset_size=options.kid_subset_size,
            kid_subsets=options.kid_subsets,
            batch_size=options.batch_size,
            device=device,
            verbose=options.verbose,
        )
    if "swd" in metrics:
        report.swd = _swd(samples, reference, options, device)
    if set(DINOV2_METRICS) & set(metrics):
        from eval.dinov2 import compute_dinov2

        report.dinov2 = compute_dinov2(
            samples,
            reference,
            metrics,
            model_name=options.dinov2_model,
            num_samples=options.num_samples,
            seed=options.seed,
            weights_dir=options.weights_dir,
            kid_subset_size=options.kid_subset_size,
            kid_subsets=options.kid_subsets,
            batch_size=options.batch_size,
            device=device,
        )
    if perceptual:
        _perceptual_metrics(report, metrics, reference, options, samples, device)
    return report


_SWD_REFERENCE: dict[tuple, object] = {}  # the last dataset's SWD descriptors, reused by every training tick


def _swd(samples: Dataset, reference, options: EvalOptions, device: torch.device) -> SWDResult:
    """SWD of the first ``num_samples`` samples against every image of the reference set."""
    from eval import swd as S

    key = (str(reference.path), reference.content_sha256, options.seed, str(device))
    real = _SWD_REFERENCE.get(key)
    if real is None:
        real = S.describe(reference.images, seed=options.seed, batch_size=options.batch_size, device=device)
        _SWD_REFERENCE.clear()  # one dataset at a time: descriptors of a large set take memory
        _SWD_REFERENCE[key] = real
    if len(samples) > options.num_samples:
        samples = Subset(samples, range(options.num_samples))
    fake = S.describe(samples, seed=options.seed, batch_size=options.batch_size, device=device)
    result = S.swd_between(real, fake, seed=options.seed)
    return SWDResult(
        swd=result["swd"],
        levels=result["levels"],
        num_generated=fake.num_images,
        num_reference=real.num_images,
        seed=options.seed,
        patches_per_image=result["patches_per_image"],
        patch_size=result["patch_size"],
        directions=result["directions"],
    )


def _generator_weights_file(generator_path: Optional[str]) -> Optional[Path]:
    """The safetensors file a checkpoint / run dir / export path resolves to: a run dir's
    latest file changes as training goes on, so the report names (and hashes) the one scored."""
    if not generator_path:
        return None
    from gan.export import GeneratorLoadError, describe_generator

    try:
        return Path(describe_generator(generator_path)["weights"])
    except GeneratorLoadError:
        return Path(generator_path) if Path(generator_path).is_file() else None


def weights_needed(metrics: list[str], lpips_net: str = "alex", dinov2_model: str = "vitl14") -> list[W.WeightSpec]:
    """The pretrained weight files the chosen metrics load."""
    needed = []
    if {"fid", "kid", "nn"} & set(metrics):
        needed.append(W.INCEPTION_V3)
    if "pr" in metrics:
        needed.append(W.VGG16)
    if {"lpips_div", "nn"} & set(metrics):
        needed.append(W.REGISTRY[f"lpips_{lpips_net}"])
    if set(DINOV2_METRICS) & set(metrics):
        from eval.dinov2 import model_spec

        needed.append(model_spec(dinov2_model).weights)
    return needed


def _generated(generator, options: EvalOptions, fidelity: bool, perceptual: bool) -> GeneratedImages:
    """One stream of samples for every metric: FID/KID/PR read the first ``num_samples``, LPIPS and
    the memorisation check the first ``lpips_samples`` (kept, downsized, as FID/KID go by)."""
    num = max(options.num_samples if fidelity else 0, options.lpips_samples if perceptual else 0)
    images = GeneratedImages(generator, num, first_seed=options.seed, psi=options.psi, batch_size=options.batch_size)
    if perceptual:
        images.retain(options.lpips_samples, max_size=MAX_IMAGE_SIZE_NN)
    return images


def _generated_for_lpips(options: EvalOptions, samples: Dataset) -> tuple[torch.Tensor, list[int] | None]:
    """The LPIPS / memorisation images and, for generator samples, the seed of each."""
    if isinstance(samples, GeneratedImages):
        images = samples.retained()
        return images, list(samples.seeds[: len(images)])
    return stack_images(samples, options.lpips_samples, max_size=MAX_IMAGE_SIZE_NN), None


def _perceptual_metrics(report, metrics, reference, options, samples, device) -> None:
    generated, seeds = _generated_for_lpips(options, samples)
    train = stack_images(reference.images, max_size=MAX_IMAGE_SIZE_NN)
    model, lpips_path = lpips_model(options.lpips_net, options.weights_dir, device)
    embedder = LpipsEmbedder(model, resolution=options.lpips_resolution)
    lpips_used = WeightsUsed(extractor=f"lpips v0.1 ({options.lpips_net} backbone)", **W.weights_identity(lpips_path))
    if "lpips_div" in metrics:
        report.diversity = compute_diversity(generated, embedder, lpips_used, options.seed, reference=train)
    if "nn" in metrics:
        inception_path = W.resolve_weights(W.INCEPTION_V3, options.weights_dir)
        extractor = inception_extractor(inception_path, device)
        inception_used = WeightsUsed(extractor="inception-v3-compat (pool3, 2048-d)", **extractor.weights_identity)
        report.memorisation = check_memorisation(
            generated,
            train,
            reference.names,
            lpips_measure=Measure("lpips", embedder.embed, squared=True),
            inception_measure=Measure("inception", lambda x: inception_features(extractor, x, options.batch_size), squared=False),
            weights=[lpips_used, inception_used],
            seed=options.seed,
            lpips_resolution=options.lpips_resolution,
            worst_k=options.worst_k,
            grid_path=options.grid_path,
            percentile=options.nn_percentile,
            factor=options.nn_factor,
            sample_seeds=seeds,
            sample_files=[f.name for f in samples.files] if isinstance(samples, FolderImages) else None,
            grid_xmp=_pairs_grid_xmp(report.generator, report.generator_weights_sha256, reference),
        )


def _pairs_grid_xmp(generator_path: Optional[str], weights_sha256: Optional[str], reference) -> str:
    """The disclosure packet of eval's nearest-neighbour grid: generated samples beside real works.

    Provenance comes from the generator when one was scored; a samples folder's origin is unknown.
    """
    from atelier.common import disclosure as X

    provenance = None
    if generator_path is not None:
        from gan.export import GeneratorLoadError, generator_provenance, resolve_source

        try:
            provenance = generator_provenance(resolve_source(generator_path))
        except (GeneratorLoadError, OSError, ValueError):
            provenance = None
    provenance = provenance or X.unknown_provenance(reason="a folder of samples")
    text = (
        f"Composite made by atelier eval: AI-generated images (left) beside their nearest real works from "
        f"the dataset {reference.path} (right). {X.disclosure_text(provenance)}"
    )
    return X.build_xmp(
        provenance,
        weights_sha256,
        {"dataset": str(reference.path)},
        description=text,
        source_type=X.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    )
