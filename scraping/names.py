"""File names from network-derived text: ASCII, safe characters only, bounded, unique per work.

A title or slug comes from the server and may be ``../../x``, contain separators, control
characters or thousands of characters; what leaves this module is always one plain file name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_PART_CHARS = 60
MAX_ID_CHARS = 40
# No dots: Windows takes the text before a name's first dot as its device name (NUL.txt is
# NUL), so the only dot in a file name is the one before the extension.
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_DASHES = re.compile(r"-{2,}")

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp", "GIF": "gif", "MPO": "jpg"}


def safe_part(text: str | None, fallback: str = "untitled", max_chars: int = MAX_PART_CHARS) -> str:
    """One path-safe name part: NFKD to ASCII, lower case, ``[a-z0-9_-]`` only (so no ``..``)."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    part = _UNSAFE.sub("-", ascii_text.lower())
    part = _DASHES.sub("-", part)
    part = part[:max_chars].strip("_-")
    return part or fallback


def safe_id(work_id: str) -> str:
    """The id as a name part, distinct for distinct ids.

    WikiArt's ids (decimal or lower-case hex) pass through unchanged. Any other id loses
    something when sanitised (case, separators, length), so two of them could meet in one
    name and one file would overwrite the other; those get a digest of the raw id appended.
    """
    part = safe_part(work_id, "id", MAX_ID_CHARS)
    if part == work_id:
        return part
    digest = hashlib.sha256(work_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{part[: MAX_ID_CHARS - 13]}-{digest}"


def image_filename(artist: str | None, work: str | None, work_id: str, image_format: str) -> str:
    """``<artist>_<work>_<id>.<ext>``; the id makes it unique even when titles collide."""
    ext = EXTENSIONS.get(image_format.upper(), "img")
    return f"{safe_part(artist, 'artist')}_{safe_part(work)}_{safe_id(work_id)}.{ext}"
