"""FID, KID and precision/recall through torch-fidelity, with our weights and a reference cache.

torch-fidelity computes the features and the metrics; it is handed extractor modules built from
weights :mod:`eval.weights` read once and verified, never a path (its own loader unpickles), and
its pickle-based cache is not used: reference features are cached here as safetensors.

Generated images go in as a Dataset of uint8 images: a generator's samples
(:class:`eval.samples.GeneratedImages`, sample ``i`` = ``generate.py`` seed ``seed + i``,
made batch by batch as torch-fidelity reads them) or a folder of samples; the prepared
dataset is the reference. Its
statistics are cached under ``cache_dir`` by a name made of the dataset's
``content_sha256``, its resolution and the sha256 of the feature extractor's weights, so
they are computed once per (dataset, weights) and never reused across different ones.

KID is the headline metric for small datasets (a master's few hundred works): FID is
biased upwards at small N, KID is not. ``kid_subset_size`` defaults to
``min(1000, #generated, #reference)`` and the report says which value was used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from atelier.common.fileio import atomic_write
from eval import weights as W
from eval.features import inception_extractor, vgg16_extractor
from eval.report import FidelityResult, WeightsUsed
from eval.samples import EvalInputError, GeneratedImages, ReferenceSet

log = logging.getLogger(__name__)

FIDELITY_METRICS = ("fid", "kid", "pr")
DEFAULT_KID_SUBSET_SIZE = 1000  # torch-fidelity's and the KID paper's default
DEFAULT_KID_SUBSETS = 100
PRC_NEIGHBORHOOD = 3  # k of the k-NN manifolds in improved precision/recall (Kynkäänniemi et al.)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/atelier/fidelity`` (``~/.cache/atelier/fidelity`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atelier" / "fidelity"


_RESULT_KEYS = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians, computed by torch-fidelity's FID formula."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    out = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, verbose=False)
    return float(out[KEY_METRIC_FID])


def choose_kid_subset_size(num_generated: int, num_reference: int, requested: int | None = None) -> tuple[int, str]:
    """KID subset size and a sentence for the report; an error when the sets are too small."""
    available = min(num_generated, num_reference)
    if requested is not None:
        if requested > available:
            raise EvalInputError(
                f"too few samples for KID subset size {requested}: {num_generated} generated and "
                f"{num_reference} reference images; lower --kid-subset-size or use more samples"
            )
        size, note = requested, f"kid_subset_size={requested} as requested"
    else:
        size = min(DEFAULT_KID_SUBSET_SIZE, available)
        note = f"kid_subset_size={size} = min({DEFAULT_KID_SUBSET_SIZE}, {num_generated} generated, {num_reference} reference)"
    if size < 2:
        raise EvalInputError(f"too few samples for KID: subset size {size} (need at least 2 images on each side)")
    return size, note


def reference_cache_name(reference: ReferenceSet, weights_sha256: str) -> str:
    """Cache key of a dataset's reference features: content hash + resolution + extractor weights."""
    return f"atelier-{reference.content_sha256[:20]}-r{reference.resolution}-w{weights_sha256[:12]}"


def _generated_input(generated: torch.nn.Module | Dataset, num_samples: int | None, seed: int, psi: float, batch_size: int) -> Dataset:
    if isinstance(generated, Dataset):
        return generated
    if num_samples is None or num_samples < 1:
        raise EvalInputError("num_samples must be a positive number of images to generate")
    return GeneratedImages(generated, num_samples, first_seed=seed, psi=psi, batch_size=batch_size)


def _device_context(device: torch.device):
    # torch-fidelity moves modules with .cuda(): make that the requested GPU.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def _fidelity_errors():
    try:
        yield
    except ValueError as exc:  # torch-fidelity's vassert: one-line input problems
        raise EvalInputError(f"torch-fidelity: {exc}") from exc


def _features(images: Dataset, extractor, common: dict) -> dict[str, torch.Tensor]:
    from torch_fidelity.utils import get_featuresdict_from_dataset

    with _fidelity_errors():
        return get_featuresdict_from_dataset(images, extractor, common["batch_size"], common["cuda"], True, common["verbose"])


def _reference_features(reference: ReferenceSet, extractor, layers: list[str], cache_name: str, common: dict) -> dict[str, torch.Tensor]:
    """The reference set's features, from the safetensors cache when present and complete."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = Path(common["cache_root"]) / f"{cache_name}-{extractor.get_name()}-features.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            log.warning("ignoring unreadable reference cache %s (%s)", path, exc)
        else:
            if all(k in cached and cached[k].dim() == 2 and len(cached[k]) == reference.count for k in layers):
                return cached
    features = _features(reference.images, extractor, common)
    try:
        atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in features.items()}, str(tmp)))
    except OSError as exc:  # a cache that cannot be written costs time, not the result
        log.warning("reference features not cached: %s", exc)
    return features


def compute_fidelity(
    generated: torch.nn.Module | Dataset,
    reference: ReferenceSet,
    metrics: Iterable[str] = ("fid", "kid"),
    num_samples: int | None = None,
    seed: int = 0,
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    kid_subset_size: int | None = None,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    verbose: bool = False,
    fid_feature_layer: str = "2048",
    psi: float = 1.0,
) -> FidelityResult:
    """FID / KID / precision-recall of ``generated`` (a Generator or a uint8 Dataset) against ``reference``.

    ``seed`` fixes KID's subset draws and, for a Generator, its samples: ``num_samples``
    images of seeds ``seed, seed + 1, ...`` at truncation ``psi``. ``fid_feature_layer``
    is Inception's pool3 ("2048", the standard FID) unless a smaller layer ("64", "192",
    "768") is asked for, e.g. for quick checks. Raises EvalInputError
    (one line) for too few images and MissingWeightsError for absent weights.
    """
    wanted = set(metrics)
    unknown = wanted - set(FIDELITY_METRICS)
    if unknown or not wanted:
        raise EvalInputError(f"fidelity metrics must be among {', '.join(FIDELITY_METRICS)}; got {sorted(wanted)}")
    device = torch.device(device)
    images = _generated_input(generated, num_samples, seed, psi, batch_size)
    num_generated = len(images)
    # No loader worker processes (save_cpu_ram): GeneratedImages must run the generator (maybe on
    # the GPU) in this process, and in-memory inputs would only pay the workers' start-up time.
    common = dict(
        images=images,
        cuda=device.type == "cuda",
        batch_size=batch_size,
        rng_seed=seed,
        verbose=verbose,
        cache_root=str(cache_dir or default_cache_dir()),
        save_cpu_ram=True,
    )
    result = FidelityResult(
        metrics={},
        num_generated=num_generated,
        num_reference=reference.count,
        seed=seed,
        kid_subset_size=None,
        kid_subsets=None,
        kid_subset_size_note=None,
        weights=[],
        reference_cache=None,
    )
    if wanted & {"fid", "kid"}:
        _inception_metrics(result, wanted, common, reference, weights_dir, kid_subset_size, kid_subsets, device, fid_feature_layer)
    if "pr" in wanted:
        _precision_recall(result, common, reference, weights_dir, device)
    return result


def _inception_metrics(result, wanted, common, reference, weights_dir, kid_subset_size, kid_subsets, device, fid_feature_layer) -> None:
    kid_kwargs = {}
    if "kid" in wanted:
        size, note = choose_kid_subset_size(result.num_generated, reference.count, kid_subset_size)
        kid_kwargs = {"kid_subset_size": size, "kid_subsets": kid_subsets}
        result.kid_subset_size, result.kid_subsets, result.kid_subset_size_note = size, kid_subsets, note
    if "fid" in wanted and min(result.num_generated, reference.count) < 2:
        raise EvalInputError("too few samples for FID: need at least 2 generated and 2 reference images")
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric

    loaded = W.read_weights(W.INCEPTION_V3, weights_dir)
    identity = loaded.identity()
    cache_name = reference_cache_name(reference, identity["sha256"])
    layers = sorted({fid_feature_layer if "fid" in wanted else "2048", "2048" if "kid" in wanted else fid_feature_layer})
    extractor = inception_extractor(loaded, "cpu", features=tuple(layers))
    del loaded  # the module holds the weights now
    out = {}
    with _device_context(device):
        if common["cuda"]:
            extractor.cuda()
        generated = _features(common["images"], extractor, common)
        real = _reference_features(reference, extractor, layers, cache_name, common)
    with _fidelity_errors():
        if "fid" in wanted:
            out.update(
                fid_statistics_to_metric(
                    fid_featuresdict_to_statistics(generated, fid_feature_layer),
                    fid_featuresdict_to_statistics(real, fid_feature_layer),
                    False,
                )
            )
        if "kid" in wanted:
            out.update(kid_featuresdict_to_metric(generated, real, "2048", rng_seed=common["rng_seed"], verbose=False, **kid_kwargs))
    result.metrics.update({_RESULT_KEYS[k]: float(v) for k, v in out.items() if k in _RESULT_KEYS})
    layer = "pool3, 2048-d" if fid_feature_layer == "2048" else f"FID on the {fid_feature_layer}-d layer"
    result.weights.append(WeightsUsed(extractor=f"inception-v3-compat ({layer})", **identity))
    result.reference_cache = cache_name


def _precision_recall(result, common, reference, weights_dir, device) -> None:
    if min(result.num_generated, reference.count) <= PRC_NEIGHBORHOOD:
        raise EvalInputError(f"too few samples for precision/recall: need more than {PRC_NEIGHBORHOOD} generated and reference images")
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric

    loaded = W.read_weights(W.VGG16, weights_dir)
    identity = loaded.identity()
    extractor = vgg16_extractor(loaded, "cpu")
    del loaded
    with _device_context(device):
        if common["cuda"]:
            extractor.cuda()
        generated = _features(common["images"], extractor, common)
        real = _reference_features(reference, extractor, ["fc2_relu"], reference_cache_name(reference, identity["sha256"]), common)
    with _fidelity_errors():
        out = prc_featuresdict_to_metric(generated, real, "fc2_relu", prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True, verbose=False)
    result.metrics.update({_RESULT_KEYS[k]: float(v) for k, v in out.items() if k in _RESULT_KEYS})
    result.weights.append(WeightsUsed(extractor="vgg16 (fc2_relu, 4096-d)", **identity))
