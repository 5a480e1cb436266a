"""One run at a time per state file: an flock on `<state>.lock`, which names its holder."""

from __future__ import annotations

import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from sync.errors import LockHeld

# A lock found held is tried again this many times, this far apart, before the run gives up (exit 75): the probe
# of `lock_holder` (a dry run's, `status`'s) holds it for a moment.
LOCK_TRIES = 5
LOCK_RETRY_SECONDS = 0.02


def lock_path(state_path: Path) -> Path:
    """The lock file of a state database, beside the file the path really names: the same database reached
    through a symlink, or a relative path, takes the same lock."""
    real = state_path.resolve()
    return real.with_name(real.name + ".lock")


def lock_holder(state_path: Path) -> str | None:
    """Who holds the lock on this state now ("pid 123 (backfill), since ..."), or None if nobody does."""
    try:
        fd = os.open(lock_path(state_path), os.O_RDONLY)
    except OSError:
        return None
    try:
        # A shared probe, released at once: it never stands in the way of a real run for longer than the call.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "an unknown process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class StateLock:
    """Exclusive, non-blocking lock beside the state database. Released by the OS if the holder dies."""

    def __init__(self, state_path: Path, command: str = ""):
        self.path = lock_path(state_path)
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < LOCK_TRIES - 1:
                    time.sleep(LOCK_RETRY_SECONDS)
                    continue
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "an unknown process"
                os.close(fd)
                raise LockHeld(f"another run holds the lock on {self.path} ({holder}); "
                               "wait for it to finish, or stop it if it is stuck") from None
        os.ftruncate(fd, 0)
        what = f" ({self.command})" if self.command else ""
        os.pwrite(fd, f"pid {os.getpid()}{what}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
