"""Image files in and out of the refiner: listing, safe decoding to tensors, atomic PNG writes.

Decoding goes through ``atelier.common.images`` (pixel-count cap read from the header before
any pixel is decoded, truncated files rejected), so every bad file becomes a
:class:`RefineInputError` with a one-line message naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.common.fileio import atomic_write_bytes
from atelier.common.images import BadImage, open_image_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class RefineInputError(ValueError):
    """A user-supplied file or folder the refiner cannot use; ``str()`` is one line."""


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def fit_size(width: int, height: int, longest_side: int, allow_upscale: bool) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``longest_side`` (never up unless allowed)."""
    scale = longest_side / max(width, height)
    if scale > 1 and not allow_upscale:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_image(path: Path, longest_side: int | None = None, allow_upscale: bool = True) -> torch.Tensor:
    """Decode ``path`` to an RGB tensor [3, H, W] in [0, 1], resized (Lanczos) to ``longest_side``.

    ``allow_upscale=False`` only ever shrinks (style images: enlarging would blur the very
    brushwork the Gram matrices are meant to capture).
    """
    try:
        image = open_image_rgb(path)
    except BadImage as exc:
        raise RefineInputError(f"cannot read image {path}: {exc}") from exc
    except OSError as exc:
        raise RefineInputError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if longest_side is not None:
        size = fit_size(image.width, image.height, longest_side, allow_upscale)
        if size != image.size:
            image = image.resize(size, Image.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> 8-bit RGB PIL image (values are rounded, not truncated)."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_png(image: torch.Tensor, path: Path) -> None:
    """Save a [3, H, W] tensor in [0, 1] as an 8-bit PNG, atomically."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
