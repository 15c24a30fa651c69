"""Image fetching and verification: the requested size first, the original as fallback.

An image is accepted only when it is a real painting file: not WikiArt's geo-block
placeholder (``FRAME-600x480.jpg``: recognised by name, and by content — its sha256 and size,
remembered from every time it was met under its own name — when it is served under a work's
name), not from a host outside the allowed image hosts, not an HTML page served under an image URL, exactly as
long as its Content-Length, fully decodable by Pillow and within the pixel cap (checked from
the header, before decoding). Files are written under a temporary ``.part`` name, fsynced and
renamed, so a final name always holds a complete file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from atelier.common.images import MAX_PIXELS, BadImage, ImageInfo, inspect_image_bytes

from .http import (
    ApiLimitExceeded,
    BodyTooLarge,
    HostNotAllowed,
    HttpError,
    PoliteClient,
    RedirectedToErrorPage,
    TruncatedBody,
    UnsafeRedirect,
)

log = logging.getLogger(__name__)

SIZES = ("Large", "HD", "original")
PLACEHOLDER_NAME = "frame-600x480.jpg"
PLACEHOLDER_PIXELS = (600, 480)  # the frame's size, as its name says
PLACEHOLDERS_FILE = "wikiart-placeholders"
WIKIART_HOSTS = ("wikiart.org",)  # and its subdomains: uploads0..8, use2-uploads*, cdn
PART_SUFFIX = ".part"
MAX_IMAGE_BYTES = 80_000_000  # WikiArt originals run to ~30 MB; anything far bigger is suspect
NON_IMAGE_TYPES = ("text/html", "text/plain", "application/json", "application/xhtml+xml")


class ImageRejected(Exception):
    """No acceptable image for a work. ``reason`` is a short category for the summary."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VerifiedImage:
    """Bytes that passed every check, and where they came from."""

    url: str
    data: bytes
    sha256: str
    info: ImageInfo


def image_candidates(image_url: str, size: str) -> list[str]:
    """URLs to try in order: ``{image}!{size}.jpg`` then the bare original."""
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not one of {', '.join(SIZES)}")
    original = image_url.split("!", 1)[0]  # a listing URL may already carry a size suffix
    if size == "original":
        return [original]
    return [f"{original}!{size}.jpg", original]


def encode_url(url: str) -> str:
    """Percent-encode non-ASCII (and other unsafe) characters, keeping existing escapes."""
    parts = urlsplit(url)
    path = quote(parts.path, safe="/%!$&'()*+,;=:@-._~")
    query = quote(parts.query, safe="/%!$&'()*+,;=:@-._~?")
    netloc = parts.netloc
    if not netloc.isascii():
        netloc = netloc.encode("idna").decode("ascii")
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def is_placeholder(url: str) -> bool:
    """WikiArt's "not available in your country" frame, under any size suffix."""
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1].split("!", 1)[0]
    return name.lower() == PLACEHOLDER_NAME


class Placeholders:
    """Fingerprints (sha256, byte size) of the placeholder as met under its own name, kept across runs.

    WikiArt can also serve the frame under a work's own image URL; by name alone it would then be
    kept as a painting (and every other blocked work dropped as its duplicate). A 600x480 image
    whose bytes match a remembered fingerprint is the placeholder whatever its URL. The file is
    append-only, one ``sha256 size`` line per fingerprint, shared by all runs on this machine.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._known: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 2 and len(parts[0]) == 64 and parts[1].isdigit():
                    self._known.add((parts[0].lower(), int(parts[1])))

    def matches(self, sha256: str, size: int, info: ImageInfo) -> bool:
        """True when the image is a 600x480 file whose sha256 and byte size are a known placeholder's."""
        with self._lock:
            return (info.width, info.height) == PLACEHOLDER_PIXELS and (sha256, size) in self._known

    def learn(self, data: bytes) -> None:
        """Remember a file served under the placeholder's name (if it is a 600x480 image)."""
        try:
            info = inspect_image_bytes(data)
        except BadImage:
            return
        if (info.width, info.height) != PLACEHOLDER_PIXELS:
            return
        key = (hashlib.sha256(data).hexdigest(), len(data))
        with self._lock:
            if key in self._known:
                return
            self._known.add(key)
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="ascii") as handle:  # one short append: no torn lines
                    handle.write(f"{key[0]} {key[1]}\n")
            except OSError as exc:
                log.warning("cannot remember the placeholder's fingerprint in %s: %s", self.path, exc)


def allowed_image_hosts(base_url: str, image_url: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """WikiArt's own hosts, the site root's host, the host the API named for this work's image, and ``extra``."""
    hosts = [*WIKIART_HOSTS, urlsplit(base_url).hostname or "", urlsplit(image_url).hostname or "", *extra]
    return tuple(dict.fromkeys(h.lower() for h in hosts if h))


def fetch_image(
    http: PoliteClient,
    image_url: str,
    size: str,
    max_pixels: int = MAX_PIXELS,
    allowed_hosts: Iterable[str] | None = None,
    placeholders: Placeholders | None = None,
) -> VerifiedImage:
    """Fetch and verify the best available version; raise :class:`ImageRejected` if none is.

    With ``allowed_hosts`` no request or redirect goes elsewhere; ``placeholders`` recognises the
    geo-block frame by content. :class:`~scraping.http.ApiLimitExceeded` propagates: it ends
    the run, not just this work.
    """
    placeholders = placeholders if placeholders is not None else Placeholders()
    failures: list[ImageRejected] = []
    for url in image_candidates(image_url, size):
        try:
            encoded = encode_url(url)
        except ValueError as exc:  # UnicodeError from IDNA: a host name no DNS could hold
            failures.append(ImageRejected("bad image URL", f"{url!r}: {exc}"))
            break  # every candidate shares the host
        try:
            return _fetch_one(http, encoded, max_pixels, allowed_hosts, placeholders)
        except ImageRejected as rejected:
            failures.append(rejected)
            if rejected.reason in ("placeholder image", "image host not allowed"):
                break  # the original is blocked (or hosted) the same way; do not ask twice
    last = failures[-1]
    detail = "; ".join(f.detail for f in failures)
    raise ImageRejected(last.reason, detail)


def _fetch_one(http: PoliteClient, url: str, max_pixels: int, allowed_hosts, placeholders: Placeholders) -> VerifiedImage:
    if is_placeholder(url):
        raise ImageRejected("placeholder image", f"{url} is the geo-block placeholder")
    try:
        fetched = http.get(url, budget="image", expect="image", max_bytes=MAX_IMAGE_BYTES, allowed_hosts=allowed_hosts)
    except ApiLimitExceeded:
        raise
    except HostNotAllowed as exc:
        raise ImageRejected("image host not allowed", str(exc)) from None
    except RedirectedToErrorPage as exc:
        raise ImageRejected("redirected to an error page", str(exc)) from None
    except UnsafeRedirect as exc:
        raise ImageRejected("redirected off http(s)", str(exc)) from None
    except TruncatedBody as exc:
        raise ImageRejected("truncated download", str(exc)) from None
    except BodyTooLarge as exc:
        raise ImageRejected("file too large", str(exc)) from None
    except HttpError as exc:
        reason = f"HTTP {exc.status}" if exc.status else "network error"
        raise ImageRejected(reason, str(exc)) from None
    if is_placeholder(fetched.url):
        placeholders.learn(fetched.body)
        raise ImageRejected("placeholder image", f"{url} redirected to the placeholder {fetched.url}")
    if fetched.content_type in NON_IMAGE_TYPES:
        raise ImageRejected("not an image", f"{url} answered {fetched.content_type}")
    try:
        info = inspect_image_bytes(fetched.body, max_pixels)
    except BadImage as exc:
        raise ImageRejected(_bad_image_reason(str(exc)), f"{url}: {exc}") from None
    sha256 = hashlib.sha256(fetched.body).hexdigest()
    if placeholders.matches(sha256, len(fetched.body), info):
        raise ImageRejected("placeholder image", f"{url} is the geo-block placeholder (sha256 {sha256[:12]})")
    return VerifiedImage(fetched.url, fetched.body, sha256, info)


def _bad_image_reason(message: str) -> str:
    for prefix, reason in (("decompression bomb", "decompression bomb"), ("not an image", "not an image"), ("zero-byte", "empty file")):
        if message.startswith(prefix):
            return reason
    return "corrupt or truncated image"


def write_part(images_dir: Path, final_name: str, data: bytes) -> Path:
    """Write ``data`` durably under ``<final_name>.part`` and return that path."""
    part = images_dir / (final_name + PART_SUFFIX)
    with open(part, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return part


def commit_part(part: Path) -> Path:
    """Rename a finished ``.part`` file to its final name (atomic) and persist the rename."""
    final = part.with_name(part.name[: -len(PART_SUFFIX)])
    os.replace(part, final)
    _fsync_dir(final.parent)
    return final


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows); the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
