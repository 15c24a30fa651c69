"""Feature extractors built from our resolved weight files: Inception-v3 and LPIPS.

* Inception is torch-fidelity's ``inception-v3-compat`` (the TF-FID network) and VGG16 its
  precision/recall extractor. Given a path, torch-fidelity would open the file itself with a
  full unpickler, so it never gets one: :mod:`eval.weights` reads the file once (verified,
  tensors only) and the module is built from those tensors.
* LPIPS is the ``lpips`` package's model, built without letting it load anything: its linear
  calibration layers (shipped in the package, sha256 recorded) and its ImageNet backbone
  (AlexNet or VGG16, our torchvision file, so offline use and ``--weights-dir`` work) are each
  read once by :mod:`eval.weights` and copied in.

LPIPS with non-negative linear weights is a squared Euclidean distance in a fixed
embedding (per layer: channel-unit-normalised activations scaled by sqrt(w / (H*W)),
concatenated), so :class:`LpipsEmbedder` embeds each image once and all pairwise
distances come from matrix products instead of one network pass per pair.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import torchvision

from eval import weights as W
from eval.samples import to_unit_range

INCEPTION_FEATURE = "2048"  # pool3 features: what FID/KID compare


# torch-fidelity's constructors fetch their own weights; while one is built, its module-level
# fetch function is swapped for one returning our tensors. The swap is process-wide, so builds
# take turns.
_BUILD_LOCK = threading.Lock()


def _as_loaded(weights: W.LoadedWeights | str | Path, spec: W.WeightSpec) -> W.LoadedWeights:
    return weights if isinstance(weights, W.LoadedWeights) else W.read_weights_file(weights, spec)


def inception_extractor(
    weights: W.LoadedWeights | str | Path, device: torch.device | str = "cpu", features: tuple[str, ...] = (INCEPTION_FEATURE,)
):
    """torch-fidelity's Inception-v3 (default: pool3 2048-d features) built from ``weights``' tensors.

    ``weights`` is a :class:`eval.weights.LoadedWeights` or a path, which is then read once here.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    loaded = _as_loaded(weights, W.INCEPTION_V3)
    with (
        _BUILD_LOCK,
        W.loading_weights(loaded.path, W.INCEPTION_V3.name),
        mock.patch.object(fe, "load_state_dict_from_url", lambda *args, **kwargs: loaded.tensors),
    ):
        extractor = fe.FeatureExtractorInceptionV3(W.INCEPTION_V3.name, list(features))
    extractor.weights_identity = loaded.identity()  # of the bytes loaded: a report never hashes the file again
    return extractor.to(device).eval()


def vgg16_extractor(weights: W.LoadedWeights | str | Path, device: torch.device | str = "cpu"):
    """torch-fidelity's VGG16 precision/recall extractor (fc2_relu, 4096-d) built from ``weights``' tensors."""
    from torch_fidelity import feature_extractor_vgg16 as fe

    loaded = _as_loaded(weights, W.VGG16)
    backbone = torchvision.models.vgg16()
    with W.loading_weights(loaded.path, W.VGG16.name):
        backbone.load_state_dict(loaded.tensors)
    with _BUILD_LOCK, mock.patch.object(fe, "torchvision_load_pretrained_vgg16", lambda **kwargs: backbone):
        extractor = fe.FeatureExtractorVGG16("vgg16", ["fc2_relu"])
    return extractor.to(device).eval()


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Pool3 features [N, 2048] (float32, CPU) of uint8 images [N, 3, H, W]."""
    device = next(extractor.parameters()).device
    out = [extractor(images[i : i + batch_size].to(device))[0].float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


_BACKBONES = {"alex": (W.ALEXNET, torchvision.models.alexnet), "vgg": (W.VGG16, torchvision.models.vgg16)}


def lpips_model(net: str = "alex", weights_dir: str | Path | None = None, device: torch.device | str = "cpu"):
    """An ``lpips.LPIPS`` (v0.1): backbone from our torchvision file, calibration layers from the package.

    Returns (model, backbone weights as :class:`eval.weights.LoadedWeights`, also a path).
    """
    import lpips

    spec, build = _BACKBONES[net]
    loaded = W.read_weights(spec, weights_dir)
    linear = W.read_weights_file(W.lpips_linear_path(net), W.LPIPS_LINEAR[net])
    # pretrained=False and pnet_rand=True: lpips opens no file and calls no downloader itself.
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    with W.loading_weights(linear.path, linear.spec.name):
        model.lins.load_state_dict(_linear_state(linear.tensors))
    backbone = build()
    with W.loading_weights(loaded.path, spec.name):
        backbone.load_state_dict(loaded.tensors)
    # lpips splits torchvision's `features` into slices whose children keep their original indices.
    for index_name, module in _slice_children(model.net):
        module.load_state_dict(backbone.features[int(index_name)].state_dict())
    return model.to(device).eval().requires_grad_(False), loaded


def _linear_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The package's file names the layers lin0..linN; model.lins holds the same modules as 0..N.
    return {key[len("lin") :]: value for key, value in tensors.items() if key.startswith("lin")}


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
        return torch.cat([self._embed_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

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
        chunk = a[start : start + block]
        cross = chunk @ b64.T
        # |x|^2 + |y|^2 - 2xy can dip below zero by rounding for identical rows.
        out[start : start + block] = (chunk.pow(2).sum(dim=1, keepdim=True) + b64_norms[None] - 2 * cross).clamp(min=0)
    return out
