"""Safe image decoding: reject bad input with a one-line reason, convert every mode to RGB.

Everything that reads an image the project did not make itself (downloaded bytes, a user's
folder) goes through here, so the checks live in one place:

* zero-byte data, non-images (an HTML error page saved as ``.jpg``) and unsupported formats;
* decompression bombs: the pixel count is read from the header (``Image.open`` is lazy) and
  checked against ``max_pixels`` *before* any pixel is decoded;
* truncated or corrupt files: the image is fully decoded with ``load()``; Pillow's
  ``LOAD_TRUNCATED_IMAGES`` is never enabled, so a short file is an error, not grey padding.

Every failure is a :class:`BadImage` whose message is one line naming the problem.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from atelier.common.errors import one_line

# Same default cap as Pillow's own bomb warning (~ 89.5 MP, a 9459 x 9459 image).
MAX_PIXELS = 89_478_485

# Formats a painting scan plausibly comes in (multi-picture JPEGs open via "JPEG" as MPO). Restricting Image.open to these keeps exotic,
# rarely-audited decoders away from untrusted bytes.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
Image.init()  # register every plugin now: Image.open(formats=...) only looks at loaded ones

# Alpha is composited over white: a painting's transparent margin is the mount/matte around it
# (and scans with cut-out backgrounds are shown on white on WikiArt), not black.
MATTE_RGB = (255, 255, 255)

_PIL_LIMIT_LOCK = threading.Lock()
log = logging.getLogger(__name__)


class BadImage(ValueError):
    """An image that cannot be used; ``str()`` is a one-line reason."""


@dataclass(frozen=True)
class ImageInfo:
    """What a verified image is: size and the format/mode Pillow decoded it as."""

    width: int
    height: int
    format: str
    mode: str


def inspect_image_bytes(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Verify that ``data`` is one complete, decodable image of at most ``max_pixels`` pixels.

    Raises :class:`BadImage` for empty data, non-images, bombs and truncated/corrupt images.
    """
    if not data:
        raise BadImage("zero-byte file")
    with _decoded(io.BytesIO(data), max_pixels) as img:
        return ImageInfo(img.width, img.height, img.format or "?", img.mode)


def open_image_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` with the same checks as :func:`inspect_image_bytes`; return an RGB image.

    EXIF orientation is applied, so the result is upright as a viewer would show it.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise BadImage("zero-byte file")
        with open(path, "rb") as fp, _decoded(fp, max_pixels) as img:
            upright = _upright(img)
            rgb = to_rgb(upright)
            # Leaving the `with` closes the decoded image; hand back an independent copy.
            return rgb.copy() if rgb is img else rgb
    except BadImage:
        raise
    except OSError as exc:
        raise BadImage(f"unreadable file: {one_line(exc)}") from exc


def _upright(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block leaves the image as stored rather than failing."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - EXIF parsing of untrusted files can raise anything
        log.warning("ignoring unreadable EXIF orientation: %s", one_line(exc))
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with correct tone scaling and alpha handling."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_gray_to_rgb(img)
    if mode == "P":
        has_alpha = "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"
        return _flatten_alpha(img.convert("RGBA")) if has_alpha else img.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _flatten_alpha(img.convert("RGBA"))
    if mode == "CMYK":
        # Pillow's plain CMYK->RGB formula (no ICC colour management). Pillow's JPEG decoder
        # already assumes Adobe's inverted CMYK polarity, which is what Photoshop writes; a rare
        # non-inverted CMYK JPEG would come out as a negative and is accepted as a known limit.
        return img.convert("RGB")
    try:
        return img.convert("RGB")  # 1, L, YCbCr, LAB, HSV, ...
    except Exception as exc:  # noqa: BLE001 - an exotic mode is bad input, not a crash
        raise BadImage(f"cannot convert mode {mode} to RGB: {one_line(exc)}") from exc


def _high_depth_gray_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit int / float grayscale down to 8 bits (Pillow's convert clips)."""
    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        full_scale = 65535.0
    elif img.mode == "F":
        # Float images are conventionally in [0, 1]; anything larger is taken as 8-bit-like.
        full_scale = 1.0 if arr.size == 0 or float(arr.max()) <= 1.0 else 255.0
    else:
        # Mode "I" (32-bit int) almost always holds 16-bit samples (16-bit PNG/TIFF in older
        # Pillow); values that all fit in a byte are treated as 8-bit data.
        full_scale = 65535.0 if arr.size and float(arr.max()) > 255 else 255.0
    gray = np.clip(np.rint(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    matte = Image.new("RGBA", rgba.size, MATTE_RGB + (255,))
    return Image.alpha_composite(matte, rgba).convert("RGB")


@contextmanager
def _decoded(fp: BinaryIO, max_pixels: int) -> Iterator[Image.Image]:
    """Open lazily, check the header size against ``max_pixels``, then fully decode."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone enabled it globally; a truncated file would silently decode as padding.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled; refusing to verify images")
    try:
        with _pil_limit_at_least(max_pixels), warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {one_line(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise BadImage(f"not an image ({_sniff(fp)})") from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise arbitrary types (struct.error, IndexError) on hostile bytes
        raise BadImage(f"unreadable image header: {one_line(exc)}") from exc
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise BadImage(f"image has empty size {width}x{height}")
        if width * height > max_pixels:
            raise BadImage(f"decompression bomb: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}")
        try:
            img.load()
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - as above: any decoder failure is bad input
            raise BadImage(f"truncated or corrupt {img.format} image: {one_line(exc)}") from exc
        yield img


@contextmanager
def _pil_limit_at_least(max_pixels: int) -> Iterator[None]:
    """Let a caller's larger ``max_pixels`` pass Pillow's own global bomb check in Image.open."""
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        if previous is not None and max_pixels > previous:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _sniff(fp: BinaryIO) -> str:
    """A short guess at what non-image bytes are, for the error message."""
    try:
        fp.seek(0)
        head = fp.read(512).lstrip().lower()
    except (OSError, ValueError):
        return "unknown content"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "looks like HTML"
    if head.startswith((b"{", b"[")):
        return "looks like JSON"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "looks like text"
    return "unrecognised format"
