"""Keep secrets in the desktop OS keyring (Secret Service, macOS Keychain, Windows Vault).

The ``keyring`` package happily falls back to backends that are not secure at all:
``keyrings.alt``'s ``PlaintextKeyring`` writes the secret to a file in the clear, and the
``fail``/``null`` backends lose it silently. This class refuses those (S1) instead of
quietly storing a refresh token somewhere an attacker can read it.

A locked collection or an unreachable Secret Service raises ``StorageUnavailable`` (M2):
the entry is still there, so the caller keeps its session and tries again later.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import InsecureStorageError, StorageError, StorageUnavailable
from .base import Storage

__all__ = ["KeyringStorage", "check_keyring_backend"]

# Module prefixes and class names of backends that do not protect secrets.
_INSECURE_MODULES = ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt.file")
_INSECURE_NAMES = ("plaintext", "null", "fail", "uncrypted", "unencrypted")
# Errors that mean "the secret is there but cannot be reached now" (M2): a locked
# collection (keyring's KeyringLocked; secretstorage's LockedException, a dismissed unlock
# prompt) or no Secret Service on the bus (InitError, SecretServiceNotAvailableException).
# Matched by name along the MRO: keyring and secretstorage are optional imports. An
# OSError (the bus socket is gone or refuses) is the same: the service is unreachable.
_UNAVAILABLE_NAMES = frozenset({
    "KeyringLocked", "InitError", "NoKeyringError", "LockedException",
    "PromptDismissedException", "SecretServiceNotAvailableException",
})


_T = TypeVar("_T")


class _Backend(Protocol):
    """The three calls used of a keyring backend (``keyring.backend.KeyringBackend``).

    A Protocol rather than keyring's class: keyring is an optional extra, and the test
    doubles and third-party backends need not inherit from it.
    """

    def get_password(self, service: str, username: str) -> str | None: ...

    def set_password(self, service: str, username: str, password: str) -> None: ...

    def delete_password(self, service: str, username: str) -> None: ...


def _members(backend: Any) -> list[Any]:
    """Return the real backends behind ``backend``, highest priority first (a chainer holds
    several)."""
    inner = getattr(backend, "backends", None)
    return list(inner) if inner is not None else [backend]


def _is_insecure(member: object) -> bool:
    cls = type(member)
    name = cls.__name__.lower()
    return cls.__module__.startswith(_INSECURE_MODULES) or any(w in name for w in _INSECURE_NAMES)


def check_keyring_backend(backend: Any) -> Any:
    """Return the secure backend to use, or raise ``InsecureStorageError``.

    A chainer (keyring's default when several backends are installed) is not used as is: it
    reads from every member and writes to the first that accepts, so a plaintext member
    could end up holding the token. The highest-priority secure member is used directly.
    """
    secure = [m for m in _members(backend) if not _is_insecure(m)]
    if not secure:
        names = ", ".join(f"{type(m).__module__}.{type(m).__name__}" for m in _members(backend))
        raise InsecureStorageError(
            f"refusing keyring backend(s) {names or 'none'}: they do not keep secrets "
            "encrypted; install a Secret Service (gnome-keyring, KWallet) or use "
            "EncryptedFileStorage"
        )
    return secure[0]


class KeyringStorage(Storage):
    """Store each value as one keyring entry ``(service, key)``.

    ``backend`` defaults to ``keyring.get_keyring()``; it is checked once, here, so a
    misconfigured machine fails at start-up rather than at the first refresh. ``lock_path``
    lets several processes of one app share the entries safely (see ``Storage.lock_path``).
    """

    def __init__(
        self,
        *,
        service: str = "latchkey",
        backend: Any | None = None,
        lock_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if backend is None:
            try:
                import keyring  # lazy: an optional extra
            except ImportError as exc:
                raise StorageError("KeyringStorage needs latchkey-client[keyring]") from exc
            backend = keyring.get_keyring()
        self._backend: _Backend = check_keyring_backend(backend)
        self._service = service
        self._lock = threading.Lock()
        self.lock_path = Path(lock_path) if lock_path is not None else None

    def __repr__(self) -> str:
        return f"KeyringStorage(service={self._service!r}, backend={type(self._backend).__name__})"

    def _call(self, what: str, fn: Callable[..., _T], *args: Any) -> _T | None:
        try:
            with self._lock:
                return fn(self._service, *args)
        except Exception as exc:  # keyring backends raise many unrelated types
            name = type(exc).__name__
            if name == "PasswordDeleteError":
                return None
            if isinstance(exc, OSError) or _UNAVAILABLE_NAMES & {
                    c.__name__ for c in type(exc).__mro__}:
                raise StorageUnavailable(
                    f"keyring {what}: locked or not reachable ({name}); nothing was changed"
                ) from exc
            raise StorageError(f"keyring {what} failed ({name})") from exc

    def load(self, key: str) -> str | None:
        """Return the keyring entry for ``key``."""
        return self._call("load", self._backend.get_password, key)

    def save(self, key: str, value: str) -> None:
        """Write the keyring entry for ``key``."""
        self._call("save", self._backend.set_password, key, value)

    def clear(self, key: str) -> None:
        """Delete the keyring entry for ``key``, if any."""
        if self.load(key) is not None:
            self._call("clear", self._backend.delete_password, key)
