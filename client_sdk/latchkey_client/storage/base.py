"""Define the storage interface and the default backend, which keeps nothing on disk."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = ["MemoryStorage", "Storage"]


class Storage(ABC):
    """Where the SDK keeps the few secrets that outlive a request.

    Keys are short ASCII names chosen by the SDK (``refresh_token``,
    ``pending_revocations``); values are strings. Implementations must be safe to call from
    several threads, must never write a value in plaintext, and ``clear`` of an absent key is
    not an error. ``lock_path`` names a file that processes sharing this storage lock around
    a refresh (``None``: the store is private to this process).
    """

    lock_path: Path | None = None

    @abstractmethod
    def load(self, key: str) -> str | None:
        """Return the stored value for ``key``, or ``None``."""

    @abstractmethod
    def save(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""

    @abstractmethod
    def clear(self, key: str) -> None:
        """Remove ``key``; absent keys are fine."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MemoryStorage(Storage):
    """Keep values in this process only: the default, and what S1 asks for unless the app
    opts in to staying signed in."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> str | None:
        """Return the value held for ``key``."""
        with self._lock:
            return self._values.get(key)

    def save(self, key: str, value: str) -> None:
        """Hold ``value`` for ``key``."""
        with self._lock:
            self._values[key] = value

    def clear(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._values.pop(key, None)
