"""The prepared-dataset format: the contract between ``atelier prepare`` (the writer) and every
reader (training, eval, the refiner's style selection, the studio).

A dataset dir holds ``dataset.json`` and square RGB PNGs at one power-of-two resolution.
``dataset.json`` records ``format`` (:data:`DATASET_FORMAT`), ``resolution``, ``count``,
``content_sha256`` (:func:`content_sha256` over the PNGs' sha256s), the source's provenance
(``source_dir``, ``source_kind``, ``source_manifest_sha256``, ``source_count``), the options
that shaped it, and one row per image (``file``, ``sha256``, crop box, the work's title, artist
and ids) plus every dropped input with its reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

DATASET_FORMAT = "atelier-dataset/1"

INFO_NAME = "dataset.json"


class DatasetError(ValueError):
    """A dataset dir that cannot be used; ``str()`` is one line naming the problem."""


def _what_it_is(root: Path) -> str:
    """For a dir without dataset.json: what it looks like, and the command that makes a dataset of it."""
    command = f"`atelier prepare --src {root} --out data/datasets/<name> --resolution <R>`"
    if (root / "manifest.jsonl").is_file():
        return f"it is a scraper download, not a prepared dataset; make one with {command}"
    if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in root.iterdir()):
        return f"it holds images but is not a prepared dataset; make one with {command}"
    return "it is empty or not a prepared dataset (make one with `atelier prepare`)"


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def load_dataset_info(path: str | Path) -> dict:
    """Parse and sanity-check ``<path>/dataset.json``; return it as a dict."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"dataset dir {root} does not exist (run `atelier prepare` first)")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory")
    info_path = root / INFO_NAME
    if not info_path.is_file():
        raise DatasetError(f"{root} has no {INFO_NAME}: {_what_it_is(root)}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{info_path} is not readable JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{info_path}: expected format {DATASET_FORMAT!r}, got {_get(info, 'format')!r}")
    resolution = info.get("resolution")
    if not isinstance(resolution, int) or resolution < 1 or resolution & (resolution - 1):
        raise DatasetError(f"{info_path}: resolution must be a power-of-two integer, got {resolution!r}")
    images = info.get("images")
    if not isinstance(images, list) or not images:
        raise DatasetError(f"{info_path}: the dataset is empty (no images listed)")
    if info.get("count") != len(images):
        raise DatasetError(f"{info_path}: count {info.get('count')!r} does not match {len(images)} listed images")
    for row in images:
        name = row.get("file") if isinstance(row, dict) else None
        # Names come from a file on disk: keep them plain so they cannot point outside the dir.
        if not isinstance(name, str) or not name.endswith(".png") or Path(name).name != name or name.startswith("."):
            raise DatasetError(f"{info_path}: bad image entry {row!r}")
    return info


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else None


def content_sha256(image_sha256s: Iterable[str]) -> str:
    """Identity of a dataset's pixels: sha256 over its sorted PNG sha256s, one per line."""
    return hashlib.sha256("\n".join(sorted(image_sha256s)).encode()).hexdigest()
