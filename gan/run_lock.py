"""One run per run dir: a lock file naming the process that trains in it.

``RUN_DIR/run.lock`` holds the pid, the host and the process's start time. A second trainer
started in the same dir refuses, naming the holder. A lock left by a process that no longer
runs (``kill -9``, a crashed node on the same host) is stale and is taken over with a note;
on another host liveness cannot be checked, so the message says how to clear it by hand.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from atelier.common.errors import AtelierError, ExitCode

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class RunDirLocked(AtelierError):
    """Another live trainer holds the run dir (bad input: wait, or pick another --run-dir)."""

    def __init__(self, message: str):
        super().__init__(message, ExitCode.BAD_INPUT)


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (Linux), which tells a reused pid from the original one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of stat; the split dropped the first two
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    current = _start_time(pid)
    return start is None or current is None or current == start


def _record() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "start": _start_time(pid),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class RunLock:
    """The lock of one run dir; ``acquire`` it before writing anything there, ``release`` at the end."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def read(self) -> Optional[dict[str, Any]]:
        """The holder's record, or None when there is no lock (or it is unreadable)."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def acquire(self) -> None:
        """Take the lock; take over a stale one (with a warning); raise RunDirLocked when it is held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a holder may release between our attempt and our read
            if self._try_create():
                self.held = True
                return
            holder = self.read()
            if holder is None:  # unreadable: a writer cut short before the rename cannot exist, so garbage
                log.warning("%s: unreadable lock file, taking it over", self.path)
            elif holder.get("host") == socket.gethostname():
                pid = int(holder.get("pid", -1))
                if pid == os.getpid():
                    self.held = True
                    return
                if _alive(pid, holder.get("start")):
                    raise RunDirLocked(
                        f"{self.path.parent}: another trainer (pid {pid}, since {holder.get('since', '?')}) is "
                        "running in this run dir; wait for it, stop it, or use another --run-dir"
                    )
                log.warning(
                    "%s: taking over the stale lock of process %d on %s, which is no longer running", self.path, pid, holder.get("host")
                )
            else:
                raise RunDirLocked(
                    f"{self.path.parent}: locked by pid {holder.get('pid')} on host {holder.get('host')} "
                    f"(since {holder.get('since', '?')}); if no trainer runs there any more, delete {self.path}"
                )
            self.path.unlink(missing_ok=True)
        raise RunDirLocked(f"{self.path}: could not take the lock (another trainer keeps taking it)")

    def _try_create(self) -> bool:
        # Write the record under a private name, then hard-link it into place: the link either
        # creates the lock with its whole content or fails because one exists (atomic, also on NFS).
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(_record(), sort_keys=True))
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # a read-only or full run dir: name the file the user knows
            exc.filename = str(self.path)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            holder = self.read()
            if holder is None or (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
