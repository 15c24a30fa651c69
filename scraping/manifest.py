"""The raw download manifest: ``<out>/manifest.jsonl``, one verified work per line, append-only.

A row is appended (and fsynced) only after its image file is complete, verified and renamed
into place, so the manifest never names a partial file. A SIGKILL can at worst tear the last
line while it is being written; reading tolerates that by cutting the torn tail off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
IMAGES_DIR = "images"


class ManifestError(ValueError):
    """A manifest that cannot be trusted (corrupt line before the end)."""


@dataclass(frozen=True)
class ManifestRow:
    """One kept work. Field order is the order written to disk."""

    id: str
    artist: str
    artist_url: str | None
    title: str
    year: int | None
    style: str | None
    genre: str | None
    source_url: str  # the work page whose label made the licence decision
    image_url: str  # the URL the bytes actually came from
    file: str  # relative to the download dir, e.g. "images/x.jpg"
    sha256: str
    width: int
    height: int
    format: str
    bytes: int
    license: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


def read_manifest(path: Path) -> list[dict]:
    """Read every complete row; repair a torn final line (left by a kill) by truncating it.

    Raises :class:`ManifestError` for a corrupt line that is *not* the last one.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows: list[dict] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not line.strip():
            good_bytes += len(line) + (0 if is_last else 1)
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row or "file" not in row:
                raise ValueError("not a manifest row")
        except ValueError as exc:
            if is_last or all(not rest.strip() for rest in lines[number:]):
                log.warning("%s: dropping a torn last line (an interrupted run wrote it)", path)
                _truncate(path, good_bytes)
                return rows
            raise ManifestError(f"{path}: line {number} is not a manifest row ({exc})") from None
        if is_last:
            # Valid JSON without its newline: keep it, but end the file properly before appending.
            with open(path, "ab") as fh:
                fh.write(b"\n")
                _sync(fh)
        rows.append(row)
        good_bytes += len(line) + 1
    return rows


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)
        _sync(fh)


def _sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


class ManifestWriter:
    """Appends rows durably: write, flush, fsync, one row at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, row: ManifestRow) -> None:
        with self._lock:
            self._fh.write(row.to_json() + "\n")
            _sync(self._fh)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
