"""Where each sample's style comes from.

Two modes, decided by the ``--style`` values:

* explicit images with blend weights, ``--style a.jpg:0.7 --style b.jpg:0.3`` (a missing
  weight counts as 1; weights are normalised to sum to 1): every sample gets that blend;
* one folder, the master's works: a prepared dataset (``dataset.json`` lists its PNGs), a
  raw download (``images/``) or any folder of images. Each sample then gets its K nearest
  works, equally weighted, so it is refined toward the paintings it already resembles.

"Nearest" uses the refiner's own style distance: the relative Gram-matrix loss of
:mod:`eval.style_transfer` between the sample and the work, both seen at the same size.
Gram matrices of conv5_1 are 1 MB each, so the works are streamed once per chunk of
samples instead of being held in memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from eval.refine_images import RefineInputError, list_image_files, load_image
from eval.style_transfer import STYLE_LAYERS, gram_matrix
from eval.vgg import VGG19Features

DATASET_INDEX = "dataset.json"
# Samples whose Gram matrices are held at once while the works stream past (~2.4 MB each).
_SAMPLE_CHUNK = 64


@dataclass(frozen=True)
class StyleChoice:
    """The style blend for one sample: images, their weights (sum 1) and, if automatic, distances."""

    paths: tuple[Path, ...]
    weights: tuple[float, ...]
    distances: Optional[tuple[float, ...]] = None


@dataclass(frozen=True)
class StyleRequest:
    """Parsed ``--style`` values: either an explicit blend or a folder of works."""

    explicit: Optional[StyleChoice] = None
    works: tuple[Path, ...] = ()
    folder: Optional[Path] = None
    raw_weights: tuple[float, ...] = ()  # explicit weights as given (masked regions use these)

    @property
    def automatic(self) -> bool:
        """True when each sample's styles are picked from a folder of works."""
        return self.explicit is None


def _split_weight(value: str) -> tuple[str, float]:
    """``"a.jpg:0.7"`` -> ("a.jpg", 0.7); a value without a numeric suffix has weight 1."""
    head, sep, tail = value.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return value, 1.0


def parse_style_args(values: Sequence[str], allow_zero: bool = False) -> StyleRequest:
    """Turn ``--style`` values into a :class:`StyleRequest`; raise RefineInputError on bad ones.

    ``allow_zero``: a weight of 0 is accepted (masked regions: that region keeps its content),
    as long as one weight is positive.
    """
    if not values:
        raise RefineInputError("no --style given: pass the master's dataset folder or style image(s)")
    parsed = [_split_weight(value) for value in values]
    if len(parsed) == 1 and Path(parsed[0][0]).is_dir():
        folder = Path(parsed[0][0])
        return StyleRequest(works=tuple(dataset_works(folder)), folder=folder)
    paths, weights = [], []
    for name, weight in parsed:
        path = Path(name)
        if path.is_dir():
            raise RefineInputError(f"--style {name}: a folder of works must be the only --style value")
        if not path.is_file():
            head, _, tail = name.rpartition(":")
            if head and Path(head).is_file():  # "a.jpg:abc": the file is there, the weight is not a number
                raise RefineInputError(f"--style {name}: blend weight {tail!r} is not a number")
            raise RefineInputError(f"--style {name}: no such style image or dataset folder")
        if not ((weight > 0 or (allow_zero and weight == 0)) and math.isfinite(weight)):
            kind = "a number >= 0" if allow_zero else "a positive number"
            raise RefineInputError(f"--style {name}: blend weight must be {kind}, got {weight}")
        paths.append(path)
        weights.append(weight)
    total = sum(weights)
    if total <= 0:
        raise RefineInputError("every --style weight is 0: nothing to style")
    return StyleRequest(explicit=StyleChoice(tuple(paths), tuple(w / total for w in weights)), raw_weights=tuple(weights))


def dataset_works(folder: Path) -> list[Path]:
    """The works in a prepared dataset, a raw download dir, or a plain folder of images."""
    if not folder.is_dir():
        raise RefineInputError(f"style folder {folder} does not exist")
    index = folder / DATASET_INDEX
    if index.is_file():
        works = _works_from_index(index)
    else:
        works = list_image_files(folder)
        if not works and (folder / "images").is_dir():  # a raw download: manifest.jsonl + images/
            works = list_image_files(folder / "images")
    if not works:
        raise RefineInputError(f"style folder {folder} holds no images")
    return works


def _works_from_index(index: Path) -> list[Path]:
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
        files = [entry["file"] for entry in info["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefineInputError(f"{index}: not a readable atelier dataset index ({exc})") from exc
    works = []
    for name in files:
        # dataset.json is our own format, but a hand-edited one must not point outside the folder.
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise RefineInputError(f"{index}: image entry {name!r} is not a file name inside the dataset")
        path = index.parent / name
        if not path.is_file():
            raise RefineInputError(f"{index}: listed image {name} is missing")
        works.append(path)
    return works


def choices_for(request: StyleRequest, num_samples: int) -> list[StyleChoice]:
    """The explicit blend repeated for every sample (automatic mode uses :func:`nearest_works`)."""
    if request.explicit is None:
        raise ValueError("automatic style requests need nearest_works()")
    return [request.explicit] * num_samples


# ---------------------------------------------------------------------------- nearest works


def _flat_grams(
    vgg: VGG19Features, paths: Sequence[Path], size: int, batch: int, device: torch.device
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (start index, {layer: [n, C*C]}) for consecutive batches of same-shape images."""
    start = 0
    while start < len(paths):
        images = [load_image(paths[start], size)]
        while len(images) < batch and start + len(images) < len(paths):
            candidate = load_image(paths[start + len(images)], size)
            if candidate.shape != images[0].shape:
                break  # a different shape starts the next batch
            images.append(candidate)
        with torch.no_grad():
            features = vgg(torch.stack(images).to(device))
        yield start, {layer: gram_matrix(features[layer]).flatten(1) for layer in STYLE_LAYERS}
        start += len(images)


def style_distances(
    vgg: VGG19Features,
    samples: Sequence[Path],
    works: Sequence[Path],
    size: int = 256,
    batch: int = 8,
    progress: Optional[Callable[[int], None]] = None,
) -> torch.Tensor:
    """[num_samples, num_works] style loss of each sample against each work, both at ``size`` px."""
    device = next(vgg.parameters()).device
    distances = torch.zeros(len(samples), len(works))
    for chunk_start in range(0, len(samples), _SAMPLE_CHUNK):
        chunk = samples[chunk_start : chunk_start + _SAMPLE_CHUNK]
        sample_grams = {layer: [] for layer in STYLE_LAYERS}
        for _, grams in _flat_grams(vgg, chunk, size, batch, device):
            for layer in STYLE_LAYERS:
                sample_grams[layer].append(grams[layer])
        held = {layer: torch.cat(values) for layer, values in sample_grams.items()}
        for start, work_grams in _flat_grams(vgg, works, size, batch, device):
            block = torch.zeros(len(chunk), work_grams[STYLE_LAYERS[0]].shape[0], device=device)
            for layer in STYLE_LAYERS:
                target = work_grams[layer]
                # Exact pairwise distances: the mm shortcut loses precision for near-identical Grams.
                squared = torch.cdist(held[layer], target, compute_mode="donot_use_mm_for_euclid_dist").square()
                block += squared / target.square().sum(dim=1).clamp_min(1e-12)
            distances[chunk_start : chunk_start + len(chunk), start : start + block.shape[1]] = (block / len(STYLE_LAYERS)).cpu()
            if progress is not None and chunk_start == 0:
                progress(block.shape[1])
    return distances


def nearest_works(
    vgg: VGG19Features,
    samples: Sequence[Path],
    works: Sequence[Path],
    k: int = 3,
    size: int = 256,
    batch: int = 8,
    progress: Optional[Callable[[int], None]] = None,
) -> list[StyleChoice]:
    """Each sample's ``k`` nearest works by style distance, equally weighted, nearest first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    distances = style_distances(vgg, samples, works, size=size, batch=batch, progress=progress)
    k = min(k, len(works))
    values, indices = torch.topk(distances, k, dim=1, largest=False)
    return [
        StyleChoice(paths=tuple(works[j] for j in row.tolist()), weights=(1.0 / k,) * k, distances=tuple(float(v) for v in dist_row))
        for row, dist_row in zip(indices, values)
    ]
