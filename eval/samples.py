"""Image sources for evaluation: generator samples, a folder of images, a prepared dataset.

Every source is a torch ``Dataset`` of ``uint8`` CHW RGB tensors, the input format of
torch-fidelity's feature extractors. Generated sample ``i`` of an evaluation with seed
``s`` is ``generate.py`` seed ``s + i`` (:mod:`gan.sampling`: latent
``RandomState(s + i).randn(z_dim)``, ``noise_mode="const"``), so a sample the memorisation
check flags can be regenerated with ``scripts/generate.py --seeds <s + i>``. The same
images feed FID/KID/PR, LPIPS diversity and the memorisation check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from atelier.common.dataset_format import load_dataset_info
from atelier.common.images import BadImage, open_image_rgb
from gan import sampling

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_PIXELS = 4096 * 4096  # a generated sample is at most 1024^2; anything far larger is refused undecoded


class EvalInputError(ValueError):
    """Bad evaluation input (wrong resolution, too few images, unreadable folder); one line."""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (LPIPS' input range)."""
    return images.float() / 127.5 - 1.0


class GeneratedImages(Dataset):
    """A generator's samples as a uint8 Dataset: item ``i`` is ``generate.py`` seed ``first_seed + i``.

    Images are made on demand, ``batch_size`` seeds per forward pass, and only the current
    batch is held, so torch-fidelity's sequential reads run the generator once per batch
    and memory stays one batch whatever ``num`` is. :meth:`retain` keeps (downsized) copies
    of the first items as they go by, so the LPIPS and memorisation checks reuse the images
    FID/KID saw instead of generating them again.
    """

    def __init__(self, G: torch.nn.Module, num: int, first_seed: int = 0, psi: float = 1.0, batch_size: int = 32):
        if num < 1:
            raise EvalInputError(f"the number of generated samples must be positive, got {num}")
        if first_seed < 0 or first_seed + num - 1 > sampling.MAX_SEED:
            raise EvalInputError(f"seeds {first_seed}..{first_seed + num - 1} are outside 0..{sampling.MAX_SEED}")
        self.G, self.psi, self.batch_size = G, psi, batch_size
        self.seeds = range(first_seed, first_seed + num)
        self.resolution = G.resolution
        self._start, self._batch = -1, torch.empty(0)
        self._retain_count, self._retain_size, self._retained = 0, None, {}

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        start = index - index % self.batch_size
        if start != self._start:
            self._start, self._batch = start, self._generate(self.seeds[start : start + self.batch_size])
            for i in range(start, min(start + len(self._batch), self._retain_count)):
                self._retained.setdefault(i, downsize(self._batch[i - start], self._retain_size))
        return self._batch[index - start]

    def _generate(self, seeds: range) -> torch.Tensor:
        images = sampling.generate_images(self.G, seeds, psi=self.psi, noise_mode="const", batch=self.batch_size)
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    def retain(self, count: int, max_size: int | None = None) -> None:
        """Keep items 0..count-1 (downsized to ``max_size``) as they are generated, for :meth:`retained`."""
        self._retain_count, self._retain_size = min(count, len(self)), max_size
        self._retained = {}

    def retained(self) -> torch.Tensor:
        """Items 0..count-1 of :meth:`retain` as one tensor; any not generated yet are generated now."""
        if self._retain_count == 0:
            raise EvalInputError("no generated samples were retained")
        for i in range(self._retain_count):
            if i not in self._retained:
                self[i]  # generates i's batch, which stores the retained copies
        return torch.stack([self._retained[i] for i in range(self._retain_count)])


class TensorImages(Dataset):
    """A uint8 image tensor [N, 3, H, W] as a Dataset."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise EvalInputError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def read_image_uint8(path: Path) -> torch.Tensor:
    """Decode one image file to uint8 CHW RGB via ``atelier.common.images`` (size cap before decoding,
    allowed formats only, truncated files refused); EvalInputError naming the file otherwise."""
    try:
        image = open_image_rgb(path, max_pixels=MAX_IMAGE_PIXELS)
    except BadImage as exc:
        raise EvalInputError(f"{path}: {exc}") from exc
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


# Images atelier writes beside samples that are not samples: generate's --grid tiling and eval's
# memorisation grid (<report>_nn.png). Counted as samples they would skew every metric.
NOT_SAMPLES = ("grid.png",)
NOT_SAMPLE_SUFFIXES = ("_nn.png",)


def is_sample_file(path: Path) -> bool:
    """An image file that is one generated sample (not a grid, not a hidden or temporary file)."""
    name = path.name.lower()
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not name.startswith(".")
        and name not in NOT_SAMPLES
        and not name.endswith(NOT_SAMPLE_SUFFIXES)
    )


class FolderImages(Dataset):
    """A folder of already generated images (PNG/JPEG/WebP), sorted by file name."""

    def __init__(self, folder: str | Path, resolution: int | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise EvalInputError(f"samples folder not found: {folder}")
        self.files = sorted(p for p in folder.iterdir() if is_sample_file(p))
        if not self.files:
            raise EvalInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        first = read_image_uint8(self.files[0])
        self.resolution = resolution or first.shape[-1]
        check_resolution(first, self.resolution, self.files[0])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = read_image_uint8(self.files[index])
        check_resolution(image, self.resolution, self.files[index])
        return image


def check_resolution(image: torch.Tensor, resolution: int, where: object) -> None:
    if tuple(image.shape[-2:]) != (resolution, resolution):
        raise EvalInputError(f"{where}: image is {image.shape[-1]}x{image.shape[-2]}, expected {resolution}x{resolution}")


@dataclass(frozen=True)
class ReferenceSet:
    """A prepared training dataset as the evaluation reference."""

    path: Path
    resolution: int
    count: int
    content_sha256: str
    names: list[str]  # image file names, in dataset order
    images: Dataset  # uint8 CHW, never flipped


class DatasetImages(Dataset):
    """A prepared dataset's images as stored (uint8, unflipped)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset.uint8(index)


def load_reference(path: str | Path, expected_resolution: int | None = None) -> ReferenceSet:
    """Open a prepared dataset dir; with ``expected_resolution``, refuse one of another resolution.

    Raises atelier.common.dataset_format.DatasetError or EvalInputError (both ValueError, one line).
    """
    from gan.dataset import ImageFolderDataset

    path = Path(path)
    info = load_dataset_info(path)
    resolution = int(info["resolution"])
    if expected_resolution is not None and resolution != expected_resolution:
        raise EvalInputError(
            f"dataset {path} is {resolution}x{resolution} but the generator makes "
            f"{expected_resolution}x{expected_resolution} images; evaluate against a dataset of the same resolution"
        )
    if not info.get("content_sha256"):
        raise EvalInputError(f"{path}/dataset.json has no content_sha256 (re-run atelier prepare)")
    # No in-memory cache: torch-fidelity reads through DataLoader workers, whose copies would be thrown away.
    dataset = ImageFolderDataset(path, resolution=resolution, xflip=False, cache=False)
    return ReferenceSet(
        path=path,
        resolution=resolution,
        count=len(dataset),
        content_sha256=str(info["content_sha256"]),
        names=[file.name for file in dataset.files],
        images=DatasetImages(dataset),
    )


def stack_images(images: Dataset, limit: int | None = None, max_size: int | None = None) -> torch.Tensor:
    """The first ``limit`` images of a uint8 Dataset as one tensor [N, 3, H, W].

    With ``max_size``, larger images are downsized (antialiased) first: the LPIPS and
    nearest-neighbour checks keep every image in memory, and 1024 px copies would not fit.
    """
    count = len(images) if limit is None else min(limit, len(images))
    if count == 0:
        raise EvalInputError("no images to evaluate")
    return torch.stack([downsize(images[i], max_size) for i in range(count)])


def downsize(image: torch.Tensor, max_size: int | None) -> torch.Tensor:
    """A uint8 CHW image resized to ``max_size`` when it is larger (unchanged otherwise)."""
    if max_size is None or image.shape[-1] <= max_size:
        return image
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=(max_size, max_size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8)
