"""One set of exit codes and one error line for every atelier command.

A stage raises :class:`AtelierError` (or returns an :class:`ExitCode`) and the CLI shell prints
``atelier <cmd>: error: <one line>``. The codes are the README's table; scripts and schedulers
(SLURM requeue rules, shell loops over artists) can rely on them.
"""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    """What an atelier command's exit status means (the same for every subcommand)."""

    OK = 0
    ERROR = 1  # an unexpected failure: a bug, reported with a traceback under --debug
    BAD_INPUT = 2  # something the user can fix: an option, a config value, an input file
    REFUSED = 3  # an outside service refused: WikiArt's quota, an unreachable host
    DIVERGED = 4  # training stopped because a loss or gradient became non-finite
    IO = 5  # an output could not be written: disk full, read-only, permission denied
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); training wrote a checkpoint first
    TERMINATED = 143  # SIGTERM (128 + SIGTERM), e.g. SLURM or cloud preemption; likewise


class AtelierError(Exception):
    """An error whose message is one line fit to show a user, with the exit code it maps to."""

    def __init__(self, message: str, code: ExitCode = ExitCode.BAD_INPUT):
        super().__init__(message)
        self.code = ExitCode(code)


def one_line(exc: BaseException, limit: int | None = 200) -> str:
    """An exception's text on one line (whitespace collapsed), cut to ``limit`` characters.

    Falls back to the exception's type name when it has no text.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None else text[:limit]


def io_error_line(exc: OSError, path: object = None) -> str:
    """A failed write as one line naming the path and the cause ("disk full", "permission denied")."""
    causes = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }
    where = path if path is not None else (exc.filename or "?")
    cause = causes.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return f"{where}: cannot write ({cause})"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text: libraries (OmegaConf, torch, safetensors) put the
    reason there and context below, which would break the one-line error contract."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
