"""Serialise refreshes across processes that share one token store, with a lock file.

``fcntl.flock`` on POSIX (Linux, macOS, Android, iOS), ``msvcrt.locking`` on Windows. The
lock protects the read-refresh-write of the stored refresh token: with rotating refresh
tokens, two processes refreshing the same token would look like theft to the server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from .errors import StorageError

__all__ = ["ProcessLock"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class ProcessLock:
    """An exclusive, blocking, re-creatable lock on ``path`` with a wait limit."""

    def __init__(self, path: Path, *, wait_seconds: float = 30.0) -> None:
        self.path = path
        self.wait_seconds = wait_seconds
        self._fd: int | None = None

    def acquire(self) -> None:
        """Block until this process holds the lock, or raise ``StorageError`` on timeout."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        give_up_at = time.monotonic() + self.wait_seconds
        while True:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:  # pragma: no cover
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                self._fd = fd
                return
            except OSError as exc:
                if time.monotonic() >= give_up_at:
                    os.close(fd)
                    raise StorageError("timed out waiting for the token store lock") from exc
                time.sleep(0.01)

    def release(self) -> None:
        """Release the lock (closing the descriptor releases it too)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
