"""SIGTERM and SIGINT as a request to stop training cleanly.

SLURM and cloud schedulers send SIGTERM and kill the job a grace period later; Ctrl-C sends
SIGINT. Either sets a flag that the training loop reads between steps: the processes agree to
stop, write a final checkpoint when one fits in the grace period, and exit with
ExitCode.TERMINATED (143) or ExitCode.INTERRUPTED (130). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Optional

from atelier.common.errors import ExitCode

EXIT_CODES = {signal.SIGTERM: ExitCode.TERMINATED, signal.SIGINT: ExitCode.INTERRUPTED}


class StopRequested(Exception):
    """Raised by the training loop once it has stopped for a signal (after its final checkpoint)."""

    def __init__(self, signum: int, checkpoint: Any, reason: str = ""):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.checkpoint, self.reason = signum, checkpoint, reason

    @property
    def code(self) -> ExitCode:
        return EXIT_CODES.get(self.signum, ExitCode.TERMINATED)


class StopSignals:
    """While entered, SIGTERM/SIGINT set :attr:`signum` instead of ending the process.

    Installed only from the main thread (Python's rule); elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.received_at: Optional[float] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the checkpoint
        if self.signum is None:
            self.signum, self.received_at = signum, time.monotonic()

    def seconds_since(self) -> float:
        return 0.0 if self.received_at is None else time.monotonic() - self.received_at

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
