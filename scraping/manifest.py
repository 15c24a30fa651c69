"""The raw download dir's records: ``manifest.jsonl`` (kept works) and ``rejected.jsonl``.

Both are JSON Lines, append-only, one work per line, written by the same durable writer.
A manifest row is appended (and fsynced) only after its image file is complete, verified and
renamed into place, so the manifest never names a partial file. ``rejected.jsonl`` records
works whose rejection is final (a licence label that is not public domain, a duplicate of a
kept image), so a re-run does not ask WikiArt about them again. A SIGKILL can at worst tear
the last line of either file while it is being written; reading tolerates that by cutting the
torn tail off.
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
REJECTED_NAME = "rejected.jsonl"
IMAGES_DIR = "images"


class ManifestError(ValueError):
    """A manifest (or rejected list) that cannot be trusted (corrupt line before the end)."""


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


@dataclass(frozen=True)
class RejectedRow:
    """One work left out for good. Field order is the order written to disk."""

    id: str
    title: str
    source_url: str  # the work page that was checked (it names the artist and the work)
    outcome: str  # e.g. "not public domain", "duplicate"
    reason: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


def read_manifest(path: Path) -> list[dict]:
    """Read every complete manifest row; repair a torn final line (left by a kill).

    Raises :class:`ManifestError` for a corrupt line that is *not* the last one.
    """
    return _read_rows(path, ("id", "file"), "manifest")


def read_rejected(path: Path) -> list[dict]:
    """Read every complete ``rejected.jsonl`` row, with the same repair and errors as the manifest."""
    return _read_rows(path, ("id", "outcome"), "rejected-work")


def _read_rows(path: Path, required: tuple[str, ...], kind: str) -> list[dict]:
    """Read a JSON Lines record file; truncate a torn final line, raise for corruption before it."""
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
            if not isinstance(row, dict) or any(key not in row for key in required):
                raise ValueError(f"not a {kind} row")
        except ValueError as exc:
            if is_last or all(not rest.strip() for rest in lines[number:]):
                log.warning("%s: dropping a torn last line (an interrupted run wrote it)", path)
                _truncate(path, good_bytes)
                return rows
            raise ManifestError(f"{path}: line {number} is not a {kind} row ({exc})") from None
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
    """Appends rows (:class:`ManifestRow` or :class:`RejectedRow`) durably: write, flush, fsync.

    ``fresh=True`` empties the file first (a run that rebuilds it from its own decisions).
    """

    def __init__(self, path: Path, fresh: bool = False):
        self.path = path
        self._fh = open(path, "w" if fresh else "a", encoding="utf-8")
        if fresh:
            _sync(self._fh)
        self._lock = threading.Lock()

    def append(self, row: ManifestRow | RejectedRow) -> None:
        with self._lock:
            self._fh.write(row.to_json() + "\n")
            _sync(self._fh)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
