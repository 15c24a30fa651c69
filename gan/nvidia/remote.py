"""Models given as an https URL: download once into the cache, then use the local file.

``--checkpoint`` / ``--init-from`` accept ``https://...`` (NVIDIA publishes its pretrained
networks that way). The file is streamed to a temp name beside its final place in the cache
(``$ATELIER_CACHE`` or ``~/.cache/atelier``, under ``models/``), hashed as it arrives, and renamed
only when complete, so an interrupted download never leaves a file that looks finished. Its
sha256 is logged, and written beside it (``<file>.sha256``) so later runs can record it without
re-hashing. Plain http is accepted only for the local machine (tests, a local mirror).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import requests
from tqdm import tqdm

from atelier.common.fileio import atomic_write, atomic_write_text
from atelier.common.hashing import file_sha256

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_BYTES = 8 << 30  # the largest public StyleGAN pickles are well under 1 GB
TIMEOUT = (10, 60)  # connect, read (seconds)
USER_AGENT = "atelier (model download)"


class DownloadError(ValueError):
    """A model URL could not be fetched; the message is one line."""


def is_url(source: object) -> bool:
    """True for an ``http(s)://`` string."""
    return isinstance(source, str) and source.lower().startswith(("https://", "http://"))


def cache_dir() -> Path:
    """Where downloaded models live: ``$ATELIER_CACHE/models`` or ``~/.cache/atelier/models``."""
    root = os.environ.get("ATELIER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "atelier")
    return Path(root) / "models"


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise DownloadError(f"{url}: only https URLs are fetched (plain http only from this machine)")


def cache_name(url: str) -> str:
    """A safe file name for ``url``: a digest of the whole URL, then its sanitised last part."""
    base = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "model"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100] or "model"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def fetch(url: str, cache: Optional[Path] = None, progress: bool = True) -> tuple[Path, str]:
    """Return (local path, sha256) of ``url``, downloading it into the cache first if needed."""
    _check_url(url)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / cache_name(url)
    digest_file = path.with_name(path.name + ".sha256")
    if path.is_file():
        digest = digest_file.read_text().strip() if digest_file.is_file() else file_sha256(path)
        log.info("%s: cached at %s (sha256 %s)", url, path, digest)
        return path, digest
    digest = _download(url, path, progress)
    atomic_write_text(digest_file, digest + "\n")
    log.info("%s: downloaded to %s (sha256 %s)", url, path, digest)
    print(f"sha256 {digest}  {path}", flush=True)
    return path, digest


def _download(url: str, path: Path, progress: bool) -> str:
    hasher = hashlib.sha256()

    def write(tmp: Path) -> None:
        try:
            with requests.get(url, stream=True, timeout=TIMEOUT, headers={"User-Agent": USER_AGENT}) as r:
                if r.status_code != 200:
                    raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason or ''}".strip())
                total = int(r.headers.get("Content-Length") or 0) or None
                if total and total > MAX_BYTES:
                    raise DownloadError(f"{url}: {total} bytes is larger than the {MAX_BYTES >> 30} GiB limit")
                done = 0
                with (
                    open(tmp, "wb") as f,
                    tqdm(total=total, unit="B", unit_scale=True, desc=path.name[13:] or "download", disable=not progress) as bar,
                ):
                    for chunk in r.iter_content(CHUNK):
                        done += len(chunk)
                        if done > MAX_BYTES:
                            raise DownloadError(f"{url}: larger than the {MAX_BYTES >> 30} GiB limit")
                        f.write(chunk)
                        hasher.update(chunk)
                        bar.update(len(chunk))
                if total is not None and done != total:
                    raise DownloadError(f"{url}: connection closed after {done} of {total} bytes")
        except requests.RequestException as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise DownloadError(f"{url}: download failed ({reason})") from None

    atomic_write(path, write)
    return hasher.hexdigest()
