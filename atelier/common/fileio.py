"""Atomic file writes: write under a temporary name in the target's folder, then rename.

A reader (or a resumed run) sees either the previous file or the complete new one, never
half a file, even when the process is killed mid-write. The temporary file lives in the
same folder so the final ``os.replace`` stays within one filesystem, where it is atomic.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], fsync: bool = True) -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it to ``path``.

    The parent folder is created if needed. The file gets the permissions a plain ``open``
    would give it (``mkstemp`` alone makes it owner-only). With ``fsync`` the data reaches
    the disk before the rename, so a power cut cannot leave an empty file under the final
    name; cheap, regenerable outputs (sample images) may skip it. On any failure the temp
    file is removed and the exception propagates; ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), fsync=fsync)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
