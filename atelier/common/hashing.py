"""File digests shared by dataset preparation and evaluation (no torch, no Pillow)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20  # stream in 1 MiB pieces: weight files run to hundreds of MB


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in chunks (memory stays flat for large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
