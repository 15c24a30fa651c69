"""Feature extractors built from our resolved weight files: Inception-v3 and LPIPS.

* Inception is torch-fidelity's ``inception-v3-compat`` (the TF-FID network), loaded from
  the file :mod:`eval.weights` resolved. torch-fidelity reads that file with a full
  unpickler, so we first load it with ``weights_only=True`` (which refuses any pickled
  code) and only then hand the path over.
* LPIPS is the ``lpips`` package's model: its linear calibration layers ship inside the
  package; its ImageNet backbone (AlexNet or VGG16) is loaded from our torchvision file
  instead of torchvision's own download, so offline use and ``--weights-dir`` work.

LPIPS with non-negative linear weights is a squared Euclidean distance in a fixed
embedding (per layer: channel-unit-normalised activations scaled by sqrt(w / (H*W)),
concatenated), so :class:`LpipsEmbedder` embeds each image once and all pairwise
distances come from matrix products instead of one network pass per pair.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from eval import weights as W
from eval.samples import to_unit_range

INCEPTION_FEATURE = "2048"  # pool3 features: what FID/KID compare


def checked_torch_weights(path: Path) -> Path:
    """Refuse a weights file that needs code to unpickle (before a library loads it unsafely)."""
    W.load_state_dict(path)
    return path


def inception_extractor(weights_path: Path, device: torch.device | str = "cpu"):
    """torch-fidelity's Inception-v3 (pool3 2048-d features) with weights from ``weights_path``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with W.loading_weights(weights_path, W.INCEPTION_V3.name):
        extractor = FeatureExtractorInceptionV3(
            W.INCEPTION_V3.name, [INCEPTION_FEATURE],
            feature_extractor_weights_path=str(checked_torch_weights(weights_path)),
        )
    return extractor.to(device).eval()


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Pool3 features [N, 2048] (float32, CPU) of uint8 images [N, 3, H, W]."""
    device = next(extractor.parameters()).device
    out = [extractor(images[i:i + batch_size].to(device))[0].float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


_BACKBONES = {"alex": (W.ALEXNET, torchvision.models.alexnet), "vgg": (W.VGG16, torchvision.models.vgg16)}


def lpips_model(net: str = "alex", weights_dir: str | Path | None = None, device: torch.device | str = "cpu"):
    """An ``lpips.LPIPS`` (v0.1) whose backbone comes from our resolved torchvision file.

    Returns (model, backbone_weights_path).
    """
    import lpips

    spec, build = _BACKBONES[net]
    path = W.resolve_weights(spec, weights_dir)
    # pnet_rand=True stops lpips from calling torchvision's own downloader; the trained
    # linear layers still load from the package (pretrained=True).
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    backbone = build()
    with W.loading_weights(path, spec.name):
        backbone.load_state_dict(W.load_state_dict(path))
    # lpips splits torchvision's `features` into slices whose children keep their original indices.
    for index_name, module in _slice_children(model.net):
        module.load_state_dict(backbone.features[int(index_name)].state_dict())
    return model.to(device).eval().requires_grad_(False), path


def _slice_children(net: torch.nn.Module):
    for slice_index in range(1, net.N_slices + 1):
        yield from getattr(net, f"slice{slice_index}").named_children()


@dataclass
class LpipsEmbedder:
    """Embeds images so that squared Euclidean distance between embeddings equals LPIPS."""

    model: torch.nn.Module
    resolution: int = 128  # images are resized to this before LPIPS (memory and speed scale with it)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """uint8 images [N, 3, H, W] -> embeddings [N, D] (float32, CPU)."""
        return torch.cat([self._embed_batch(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])

    def _embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = to_unit_range(images.to(device))
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True)
        activations = self.model.net(self.model.scaling_layer(x))
        parts = []
        for layer, act in enumerate(activations):
            unit = act / (act.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # lpips.normalize_tensor
            weight = self.model.lins[layer].model[-1].weight.view(1, -1, 1, 1)
            height, width = unit.shape[-2:]
            parts.append((unit * (weight.clamp(min=0) / (height * width)).sqrt()).flatten(1))
        return torch.cat(parts, dim=1).float().cpu()


def squared_distances(a: torch.Tensor, b: torch.Tensor, block: int = 256) -> torch.Tensor:
    """All pairwise squared Euclidean distances [len(a), len(b)], in float64 blocks."""
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    # Distances ignore a common shift; centring first keeps |x|^2 + |y|^2 - 2xy from
    # cancelling catastrophically when all embeddings share a large common component.
    centre = b.double().mean(dim=0, keepdim=True)
    a = a.double() - centre
    b64 = b.double() - centre
    b64_norms = b64.pow(2).sum(dim=1)
    for start in range(0, len(a), block):
        chunk = a[start:start + block]
        cross = chunk @ b64.T
        # |x|^2 + |y|^2 - 2xy can dip below zero by rounding for identical rows.
        out[start:start + block] = (chunk.pow(2).sum(dim=1, keepdim=True) + b64_norms[None] - 2 * cross).clamp(min=0)
    return out
