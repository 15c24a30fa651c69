"""Image files in and out of the refiner: listing, safe decoding to tensors, atomic PNG writes.

Outputs carry the disclosure packet (atelier.common.disclosure) of their source, extended with
the refinement. Decoding goes through ``atelier.common.images`` (pixel-count cap read from the header before
any pixel is decoded, truncated files rejected), so every bad file becomes a
:class:`RefineInputError` with a one-line message naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from PIL import Image

from atelier.common.disclosure import DisclosureError, extend_xmp, read_xmp, write_png
from atelier.common.images import BadImage, open_image_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class RefineInputError(ValueError):
    """A user-supplied file or folder the refiner cannot use; ``str()`` is one line."""


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
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


def save_png(image: torch.Tensor, path: Path, source: Optional[Path] = None, refine: Optional[Mapping[str, Any]] = None) -> None:
    """Save a [3, H, W] tensor in [0, 1] as an 8-bit PNG, atomically, with the disclosure packet:
    the ``source`` image's XMP packet kept whole, plus one refinement entry with the ``refine``
    settings (a new packet saying the origin is unknown when the source has none or an unreadable one)."""
    packet = None
    if source is not None or refine is not None:
        original = read_xmp(source) if source is not None else None
        try:
            packet = extend_xmp(original, dict(refine or {}))
        except DisclosureError as exc:  # a foreign file's broken packet is not carried over
            log.warning("%s: its XMP packet is not kept (%s)", source, exc)
            packet = extend_xmp(None, dict(refine or {}))
    write_png(to_pil(image), path, packet, fsync=True)
