"""VGG19 feature extractor for neural style transfer (Gatys, Ecker & Bethge, CVPR 2016, Fig. 2).

The network is torchvision's ``vgg19`` (16 conv layers in 5 blocks), built without
weights and then filled from a state dict file, so the same code loads the official
ImageNet file (``vgg19-dcbb9e9d.pth``), a user's ``--weights`` file, or a random-init
file written by the tests. Only the convolutional part up to the deepest requested
layer is kept: the classifier (100M of the 144M parameters) is never used.

Layer names follow the paper: ``conv3_1`` is the first convolution of block 3. As in
Gatys' Caffe implementation (where ReLUs run in place on the conv blob), the response
of ``convX_Y`` is taken *after* its ReLU.

Pooling: Gatys et al. replace max-pooling by average pooling because it "improves the
gradient flow and one obtains slightly more appealing results"; ``pooling="avg"`` (the
default) does the same. The pretrained filters were trained with max-pooling, so
``pooling="max"`` is there for users who want the unmodified network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
import torchvision
from torch import nn

from eval.weights import VGG19, load_state_dict, resolve_weights

# ImageNet statistics torchvision's VGG19 was trained with (inputs are RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Convolutions per block in VGG19 (configuration "E" of Simonyan & Zisserman).
_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)


def _layer_names() -> tuple[str, ...]:
    """Name of every module in torchvision's ``vgg19().features``, in order."""
    names: list[str] = []
    for block, convs in enumerate(_CONVS_PER_BLOCK, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG19_LAYER_NAMES = _layer_names()
# Where each named response is read: the output of the ReLU that follows the conv.
_RESPONSE_INDEX = {name: VGG19_LAYER_NAMES.index("relu" + name[4:]) for name in VGG19_LAYER_NAMES if name.startswith("conv")}


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk returning the rectified responses of named conv layers.

    Input: RGB images in [0, 1], shape [N, 3, H, W]; ImageNet normalisation happens
    inside. Output: ``{layer_name: tensor [N, C, h, w]}`` for the requested layers.
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], layers: Iterable[str], pooling: str = "avg"):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in _RESPONSE_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; expected names like conv4_2")
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        last = max(_RESPONSE_INDEX[name] for name in self.layers)
        # Built on the meta device: no time is spent on a random init that the file overwrites.
        with torch.device("meta"):
            trunk = torchvision.models.vgg19(weights=None).features[: last + 1]
        trunk.load_state_dict(_trunk_state(state_dict, trunk), strict=True, assign=True)
        if pooling == "avg":
            for index, module in enumerate(trunk):
                if isinstance(module, nn.MaxPool2d):
                    trunk[index] = nn.AvgPool2d(kernel_size=2, stride=2)
        for index, module in enumerate(trunk):
            if isinstance(module, nn.ReLU):
                # Not in place: the response we hand out must not be overwritten later.
                trunk[index] = nn.ReLU(inplace=False)
        self.trunk = trunk.eval().requires_grad_(False)
        self.pooling = pooling
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._wanted = {_RESPONSE_INDEX[name]: name for name in self.layers}
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        """Always stays in eval mode (a frozen feature extractor)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rectified responses of ``self.layers`` for RGB images in [0, 1]."""
        x = (images - self.mean) / self.std
        responses: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.trunk):
            x = module(x)
            if index in self._wanted:
                responses[self._wanted[index]] = x
        return responses


def _trunk_state(state_dict: Mapping[str, torch.Tensor], trunk: nn.Sequential) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a full torchvision VGG19 state dict, keyed for ``trunk``."""
    wanted = trunk.state_dict().keys()
    # Accept both a full model state dict ("features.0.weight") and a trunk-only one ("0.weight").
    prefix = "features." if any(key.startswith("features.") for key in state_dict) else ""
    missing = [key for key in wanted if prefix + key not in state_dict]
    if missing:
        raise ValueError(f"not a torchvision VGG19 state dict: missing {prefix}{missing[0]}")
    subset = {key: state_dict[prefix + key] for key in wanted}
    for key, param in trunk.state_dict().items():
        if tuple(subset[key].shape) != tuple(param.shape):
            raise ValueError(
                f"not a torchvision VGG19 state dict: {prefix}{key} has shape {tuple(subset[key].shape)}, expected {tuple(param.shape)}"
            )
    return {key: value.float() for key, value in subset.items()}


def vgg19_weights_path(weights: str | Path | None = None, weights_dir: str | Path | None = None) -> Path:
    """The VGG19 file to load: ``weights`` if given, else the resolved official file.

    Raises ``MissingWeightsError`` (one line naming the file, checksum and where to put it)
    when the official file is absent and cannot be downloaded.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--weights file {path} does not exist")
        return path
    return resolve_weights(VGG19, weights_dir=weights_dir)


def load_vgg19(
    layers: Iterable[str],
    weights: str | Path | None = None,
    weights_dir: str | Path | None = None,
    pooling: str = "avg",
    device: str | torch.device = "cpu",
) -> VGG19Features:
    """Build the frozen VGG19 feature extractor on ``device`` from a resolved weights file."""
    path = vgg19_weights_path(weights, weights_dir)
    state = load_state_dict(path)  # its ValueError already names the file
    try:
        model = VGG19Features(state, layers, pooling=pooling)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    model.weights_path = path
    return model.to(device)
