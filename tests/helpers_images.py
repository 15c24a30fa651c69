"""Small image builders shared by the dataset tests (everything made in memory, in tmp_path)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def painting(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct structured RGB picture per seed: a gradient ground with random shapes on it."""
    rng = np.random.default_rng(seed)
    w, h = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    ground = ((1 - t) * top + t * bottom).repeat(w, axis=1).astype(np.uint8)
    img = Image.fromarray(ground, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, max(w - 8, 1)), rng.integers(0, max(h - 8, 1))
        x1, y1 = x0 + rng.integers(8, max(w // 2, 9)), y0 + rng.integers(8, max(h // 2, 9))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img


def save(img: Image.Image, path: Path, **params) -> Path:
    """Save ``img`` to ``path`` (format from the suffix unless ``format=`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **params)
    return path


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny, well-formed-looking PNG whose header claims ``width`` x ``height`` pixels.

    Only the first row of pixel data is present: enough for any decoder to start, a few hundred
    bytes on disk, and a decompression bomb for anything that trusts the header.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    first_row = zlib.compress(b"\x00" * (1 + width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", first_row) + chunk(b"IEND", b"")


def write_raw_download(root: Path, images: dict[str, Image.Image], extra_rows: list[dict | str] | None = None) -> Path:
    """A scraper-shaped dir: images/<name> + manifest.jsonl rows with the scraper's fields.

    ``extra_rows`` are appended as they are: dicts as JSON, strings verbatim (to plant bad lines).
    """
    import hashlib

    rows = []
    for i, (name, img) in enumerate(sorted(images.items())):
        path = save(img, root / "images" / name, quality=92) if name.endswith(".jpg") else save(img, root / "images" / name)
        data = path.read_bytes()
        rows.append(
            {
                "id": f"work-{i}",
                "artist": "Test Painter",
                "artist_url": None,
                "title": f"Study {i}",
                "year": 1900 + i,
                "style": "Test",
                "genre": "landscape",
                "source_url": f"http://127.0.0.1/w/{i}",
                "image_url": f"http://127.0.0.1/i/{i}",
                "file": f"images/{name}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": img.width,
                "height": img.height,
                "format": "JPEG" if name.endswith(".jpg") else "PNG",
                "bytes": len(data),
                "license": "public domain",
            }
        )
    rows.extend(extra_rows or [])
    with open(root / "manifest.jsonl", "w", encoding="utf-8") as fp:
        for row in rows:
            fp.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return root
