"""An NVIDIA pickle (or an https URL of one) as a generator source for :mod:`gan.export`.

:func:`gan.export.resolve_source` / :func:`~gan.export.load_generator` call these, so generate,
eval, refine's sampling and the studio accept a ``.pkl`` without knowing about it. The pickle is
read and converted once per process (keyed by path, size and mtime); the metadata has the same
shape as an export's, plus ``nvidia`` (the pickle's format and file name) and, for a URL, its
``source_url`` and ``source_sha256``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import torch

from gan.nvidia.convert import ConvertedNetworks, build_network, load_pickle_networks
from gan.nvidia.remote import fetch, is_url
from gan.nvidia.unpickler import is_pickle_path

KIND = "nvidia-pickle"
_converted: dict[tuple, ConvertedNetworks] = {}  # one entry: the pickle last used
_fetched: dict[str, tuple[Path, str]] = {}


def localize(source: str | os.PathLike) -> tuple[Path, Optional[str], Optional[str]]:
    """(local path, url, sha256): an https URL is downloaded into the cache first."""
    if is_url(str(source)):
        url = str(source)
        if url not in _fetched:
            _fetched[url] = fetch(url)
        path, digest = _fetched[url]
        return path, url, digest
    return Path(source), None, None


def is_nvidia_pickle(path: Path) -> bool:
    """A local file named like a pickle (``.pkl``)."""
    return is_pickle_path(path) and path.is_file()


def converted(path: Path) -> ConvertedNetworks:
    """The pickle's networks converted to atelier's (cached for the last pickle)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _converted:
        _converted.clear()
        _converted[key] = load_pickle_networks(path)
    return _converted[key]


def generator_meta(path: Path, export_format: str, url: Optional[str] = None, digest: Optional[str] = None) -> dict[str, Any]:
    """Export-style metadata for a pickle's G_ema."""
    conv = converted(path)
    meta: dict[str, Any] = {
        "format": export_format,
        "model": dataclasses.asdict(conv.arch.model),
        "resolution": conv.arch.resolution,
        "img_channels": conv.arch.img_channels,
        "nvidia": {"format": conv.format, "file": path.name},
    }
    if url:
        meta.update(source_url=url, source_sha256=digest)
    return meta


def pickle_generator(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """An eval-mode, frozen atelier Generator holding the pickle's G_ema."""
    return build_network(converted(path), "G_ema", device).requires_grad_(False)
