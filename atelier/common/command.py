"""The house style every atelier command shares: its parser, its logging and its error line.

A stage's command is ``main(argv) -> int``. It builds its parser with :class:`CommandParser`,
calls :func:`setup_logging` once, and reports failure with :func:`fail`, which prints
``atelier <cmd>: error: <one line>`` and returns the :class:`~atelier.common.errors.ExitCode`
from the README's table. The same command runs as ``atelier <cmd>`` and through its old form
(``python -m scraping``, ``python train.py`` ...), with the same output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from atelier.common.errors import AtelierError, ExitCode, io_error_line, one_line

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
_QUIET_LIBRARIES = ("urllib3", "PIL", "matplotlib", "httpx", "httpcore", "asyncio", "filelock")


class CommandParser(argparse.ArgumentParser):
    """argparse, with the usage error as one line (``atelier <cmd>: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(int(ExitCode.BAD_INPUT), f"{self.prog}: error: {one_line(message, None)} (see --help)\n")


def prog_name(cmd: str) -> str:
    """The name a command shows in usage and error lines."""
    return f"atelier {cmd}"


def setup_logging(verbose: bool = False, is_main: bool = True) -> None:
    """One log format for every command; DEBUG with ``--verbose``; non-main processes log warnings only."""
    level = logging.DEBUG if verbose else logging.INFO if is_main else logging.WARNING
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    if not verbose:
        for name in _QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def error_line(cmd: str, message: object) -> str:
    """The one error line: ``atelier <cmd>: error: <message on one line>``."""
    text = one_line(message, None) if isinstance(message, BaseException) else " ".join(str(message).split())
    return f"{prog_name(cmd)}: error: {text}"


def fail(cmd: str, message: object, code: ExitCode = ExitCode.BAD_INPUT) -> int:
    """Print the error line to stderr and return ``code`` (for ``return fail(...)`` in a main)."""
    if isinstance(message, AtelierError):
        code = message.code
    print(error_line(cmd, message), file=sys.stderr, flush=True)
    return int(code)


def fail_write(cmd: str, exc: OSError, path: object = None) -> int:
    """A write that failed (disk full, read-only, permission): one line naming the path and cause; exit 5."""
    return fail(cmd, io_error_line(exc, path), ExitCode.IO)
