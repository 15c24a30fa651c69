"""FD_DINOv2: Fréchet distance in DINOv2 feature space, with KID and precision/recall there too.

Stein et al. 2023 ("Exposing flaws of generative model evaluation metrics", the dgm-eval
code) found that Inception-v3 FID ranks models against human judgement and recommend the
features of DINOv2 ViT-L/14 instead. Here the network is timm's DINOv2 ViT
(``vit_large_patch14_dinov2.lvd142m`` by default) built without weights and loaded from the
safetensors file that timm publishes on the Hugging Face Hub (never unpickled): see
:data:`eval.weights.DINOV2_VITL14`. Offline, put that file into ``--weights-dir``.

Features: the CLS token after the final norm (1024-d for ViT-L/14), as dgm-eval takes them;
images are resized to 224 x 224 (bicubic, antialiased) and normalised with the ImageNet mean
and std; the ViT's position embeddings are resampled to the 16 x 16 patch grid by timm.
The Fréchet distance, KID and precision/recall are torch-fidelity's formulas applied to
these features (``fd_dinov2``, ``kid_dinov2``, ``pr_dinov2``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from eval import weights as W
from eval.report import DinoV2Result, WeightsUsed
from eval.samples import EvalInputError

log = logging.getLogger(__name__)

DINOV2_METRICS = ("fd_dinov2", "kid_dinov2", "pr_dinov2")
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRC_NEIGHBORHOOD = 3


@dataclass(frozen=True)
class DinoV2Model:
    """One DINOv2 backbone: the timm architecture and its weights file."""

    timm_name: str
    label: str
    dim: int
    weights: W.WeightSpec


MODELS = {
    "vitl14": DinoV2Model("vit_large_patch14_dinov2.lvd142m", "DINOv2 ViT-L/14", 1024, W.DINOV2_VITL14),
    "vits14": DinoV2Model("vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14", 384, W.DINOV2_VITS14),
}
DEFAULT_MODEL = "vitl14"  # dgm-eval's choice


def model_spec(name: str) -> DinoV2Model:
    if name not in MODELS:
        raise EvalInputError(f"unknown DINOv2 model {name!r}: choose from {', '.join(MODELS)}")
    return MODELS[name]


def feature_space(model: DinoV2Model) -> str:
    """What the numbers are computed on, in words, for the report."""
    return f"{model.label} (timm {model.timm_name}) CLS token, {model.dim}-d; {INPUT_SIZE} px bicubic, ImageNet normalisation"


def build_model(name: str, weights_path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """timm's DINOv2 ViT with the weights of ``weights_path`` (safetensors or tensors-only .pt).

    A file with other tensors (another ViT size, another network) is a one-line ValueError
    naming the file.
    """
    import timm

    spec = model_spec(name)
    # dynamic_img_size: the 518 px position embeddings of the checkpoint are resampled to the
    # 224 px input at run time, so the checkpoint loads exactly as published.
    # Built on the meta device: the file supplies every tensor, so a random init would be wasted work.
    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    # timm's own filter, as its Hub loader applies it: maps Meta's original DINOv2 key names
    # (a file converted by hand) to timm's and leaves a timm export as it is.
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(W.load_state_dict(weights_path), model)
    with W.loading_weights(weights_path, f"{spec.label} (timm {spec.timm_name})"):
        model.load_state_dict(state, assign=True)
    unset = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unset:
        raise ValueError(f"{weights_path}: not {spec.label} weights ({len(unset)} tensors not in the file)")
    return model.eval().requires_grad_(False).to(device)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, 224, 224], ImageNet-normalised."""
    x = images.float() / 255.0
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def extract(
    model: torch.nn.Module,
    images: Dataset | Iterable[torch.Tensor],
    limit: Optional[int] = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """DINOv2 features [N, dim] (float64, CPU) of the first ``limit`` uint8 images of ``images``."""
    device = torch.device(device)
    count = len(images) if limit is None else min(limit, len(images))
    if count == 0:
        raise EvalInputError("no images for DINOv2 features")
    features = []
    for start in range(0, count, batch_size):
        batch = torch.stack([images[i] for i in range(start, min(start + batch_size, count))]).to(device)
        features.append(model(preprocess(batch)).double().cpu())
    return torch.cat(features)


def fd_kid_pr(
    generated: torch.Tensor,
    reference: torch.Tensor,
    metrics: Iterable[str],
    seed: int = 0,
    kid_subset_size: Optional[int] = None,
    kid_subsets: int = 100,
) -> tuple[dict[str, float], Optional[int]]:
    """torch-fidelity's FID / KID / precision-recall formulas on two feature sets; returns (values, KID subset size)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    from eval.fidelity import choose_kid_subset_size

    metrics, out, subset = set(metrics), {}, None
    if "fd_dinov2" in metrics:
        if min(len(generated), len(reference)) < 2:
            raise EvalInputError("too few samples for FD_DINOv2: need at least 2 generated and 2 reference images")
        stats = [fid_features_to_statistics(f) for f in (generated, reference)]
        out["fd_dinov2"] = float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])
    if "kid_dinov2" in metrics:
        subset, _ = choose_kid_subset_size(len(generated), len(reference), kid_subset_size)
        kid = kid_features_to_metric(generated, reference, kid_subsets=kid_subsets, kid_subset_size=subset, rng_seed=seed, verbose=False)
        out["kid_dinov2_mean"] = float(kid["kernel_inception_distance_mean"])
        out["kid_dinov2_std"] = float(kid["kernel_inception_distance_std"])
    if "pr_dinov2" in metrics:
        if min(len(generated), len(reference)) <= PRC_NEIGHBORHOOD:
            raise EvalInputError(f"too few samples for precision/recall: need more than {PRC_NEIGHBORHOOD} a side")
        prc = prc_features_to_metric(
            generated.float(), reference.float(), prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=10000, save_cpu_ram=True, verbose=False
        )
        out.update({"precision_dinov2": float(prc["precision"]), "recall_dinov2": float(prc["recall"])})
    return out, subset


_REFERENCE: dict[tuple, torch.Tensor] = {}  # the last dataset's features, reused by every training tick


def compute_dinov2(
    generated: Dataset,
    reference,
    metrics: Iterable[str],
    model_name: str = DEFAULT_MODEL,
    num_samples: Optional[int] = None,
    seed: int = 0,
    weights_dir: Optional[str] = None,
    kid_subset_size: Optional[int] = None,
    kid_subsets: int = 100,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> DinoV2Result:
    """FD_DINOv2 (and KID / precision-recall in the same space) of the first ``num_samples``
    uint8 ``generated`` images against every image of ``reference`` (eval.samples.ReferenceSet)."""
    wanted = [m for m in DINOV2_METRICS if m in set(metrics)]
    if not wanted:
        raise EvalInputError(f"DINOv2 metrics must be among {', '.join(DINOV2_METRICS)}")
    spec = model_spec(model_name)
    path = W.resolve_weights(spec.weights, weights_dir)
    identity = W.weights_identity(path)
    model = build_model(model_name, path, device)
    key = (str(reference.path), reference.content_sha256, identity["sha256"], str(device))
    real = _REFERENCE.get(key)
    if real is None:
        real = extract(model, reference.images, batch_size=batch_size, device=device)
        _REFERENCE.clear()
        _REFERENCE[key] = real
    fake = extract(model, generated, limit=num_samples, batch_size=batch_size, device=device)
    values, subset = fd_kid_pr(fake, real, wanted, seed, kid_subset_size, kid_subsets)
    return DinoV2Result(
        metrics=values,
        num_generated=len(fake),
        num_reference=len(real),
        seed=seed,
        kid_subset_size=subset,
        kid_subsets=kid_subsets if subset else None,
        feature_space=feature_space(spec),
        weights=[WeightsUsed(extractor=spec.label, **identity)],
    )
