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
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() gives a new folder (mkdtemp gives 0700)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], fsync: bool = True) -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it to ``path``.

    The parent folder is created if needed. The file gets the permissions a plain ``open``
    would give it under the user's umask (``mkstemp`` makes it owner-only, and some writers,
    safetensors among them, recreate the file owner-only, so the mode is set after writing). With ``fsync`` the data reaches
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
        write(tmp)
        os.chmod(tmp, FILE_MODE)
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


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh temporary folder inside ``parent`` (for a later rename), with the user's umask applied.

    ``tempfile.mkdtemp`` makes folders owner-only; a dataset renamed from one would stay
    unreadable to teammates on a shared machine.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, DIR_MODE)
    return path


def check_writable(folder: str | os.PathLike) -> Path:
    """Prove a file can be written and synced in ``folder``; raise OSError (naming the cause) if not.

    Commands call this before long work so that a read-only or full disk is reported at once,
    not after hours of computing. Folders it had to create for the probe are removed again with
    the probe file, so a later failure leaves no empty output folder behind.
    """
    folder = Path(folder)
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=".atelier-write-check-", dir=folder)
        try:
            os.write(fd, b"atelier")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    finally:
        for created in missing:  # deepest first
            try:
                created.rmdir()
            except OSError:
                pass
    return folder
