"""Image sources for evaluation: generator samples, a folder of images, a prepared dataset.

Every source is a torch ``Dataset`` of ``uint8`` CHW RGB tensors, the input format of
torch-fidelity's feature extractors. Generated sample ``i`` of an evaluation with seed
``s`` is ``G(z_i)`` where ``z = np.random.RandomState(s).randn(N, z_dim)``: the same
latent stream torch-fidelity's generative-model wrapper draws, so the images the LPIPS
and memorisation checks look at are the first images FID/KID saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_PIXELS = 4096 * 4096  # a generated sample is at most 1024^2; anything far larger is refused undecoded


class EvalInputError(ValueError):
    """Bad evaluation input (wrong resolution, too few images, unreadable folder); one line."""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output (~[-1, 1] float) -> uint8 in [0, 255], the StyleGAN convention."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (LPIPS' input range)."""
    return images.float() / 127.5 - 1.0


def sample_latents(seed: int, num: int, z_dim: int) -> torch.Tensor:
    """The latents of samples 0..num-1 for ``seed`` (torch-fidelity's 'normal' noise stream)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(num, z_dim)).float()


class GeneratorAsUint8(torch.nn.Module):
    """A Generator that returns uint8 images: what torch-fidelity's module wrapper expects.

    ``noise_mode="const"`` makes a sample a pure function of its latent, so reports are
    reproducible from (checkpoint, seed).
    """

    def __init__(self, G: torch.nn.Module, psi: float = 1.0, noise_mode: str = "const"):
        super().__init__()
        self.G = G
        self.psi = psi
        self.noise_mode = noise_mode

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.G(z.to(next(self.G.parameters()).device), psi=self.psi, noise_mode=self.noise_mode)
        return to_uint8(images)


@torch.no_grad()
def generate_images(
    G: torch.nn.Module, num: int, seed: int, batch_size: int = 32, psi: float = 1.0
) -> torch.Tensor:
    """Samples 0..num-1 of ``seed`` as a uint8 tensor [num, 3, R, R] on the CPU."""
    wrapper = GeneratorAsUint8(G, psi=psi)
    latents = sample_latents(seed, num, G.z_dim)
    chunks = [wrapper(latents[start:start + batch_size]).cpu() for start in range(0, num, batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, 3, G.resolution, G.resolution, dtype=torch.uint8)


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
    """Decode one image file to uint8 CHW RGB, refusing decompression bombs before decoding."""
    with Image.open(path) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise EvalInputError(f"{path}: {width}x{height} is larger than the {MAX_IMAGE_PIXELS} pixel cap")
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class FolderImages(Dataset):
    """A folder of already generated images (PNG/JPEG/WebP), sorted by file name."""

    def __init__(self, folder: str | Path, resolution: int | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise EvalInputError(f"samples folder not found: {folder}")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
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
        raise EvalInputError(
            f"{where}: image is {image.shape[-1]}x{image.shape[-2]}, expected {resolution}x{resolution}"
        )


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

    Raises gan.dataset.DatasetError or EvalInputError (both ValueError, one line).
    """
    from gan.dataset import ImageFolderDataset, load_dataset_info

    path = Path(path)
    info = load_dataset_info(path)
    resolution = int(info["resolution"])
    if expected_resolution is not None and resolution != expected_resolution:
        raise EvalInputError(
            f"dataset {path} is {resolution}x{resolution} but the generator makes "
            f"{expected_resolution}x{expected_resolution} images; evaluate against a dataset of the same resolution"
        )
    if not info.get("content_sha256"):
        raise EvalInputError(f"{path}/dataset.json has no content_sha256 (re-run python -m scraping.prepare)")
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
