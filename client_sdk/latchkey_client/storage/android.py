"""Keep secrets under an Android Keystore key: AES-GCM in the Keystore, ciphertext in prefs.

The Keystore holds a non-exportable AES-256 key (``alias``); each value is sealed with it
(AES/GCM/NoPadding, the Keystore picks the IV, the value's name is the AAD) and the sealed
box is kept in private SharedPreferences. A copy of the app's data directory is useless
off the device.

The cipher work is Java, not Python: ``org.latchkey.KeystoreBox`` (``demo_app/android/src``,
shipped with the app through buildozer's ``android.add_src``). Calling ``Cipher.init``
through pyjnius picks the wrong overload for a ``SecretKey`` (kivy/pyjnius #207, #757), so
the helper exposes one-signature methods over strings and byte arrays. Its key store is
switchable: ``AndroidKeys`` (``AndroidKeyStore`` and ``KeyGenParameterSpec``) on a phone,
a PKCS12 key store on a desktop JVM, where tests/sdk/test_android_jvm.py runs this module
through the real pyjnius.

The seams, kept thin because only a phone can run them: :func:`android_box` (the
``AndroidKeys`` factory) and :class:`SharedPreferencesStore` (the activity's
SharedPreferences). Give ``box`` and ``prefs`` to run anywhere else.

Failures are typed (M2): the helper raises ``KeystoreBox$Lost`` (key invalidated or
missing, AEAD tag mismatch) or ``KeystoreBox$Unavailable`` (user not authenticated, key
store unreachable), mapped here to :class:`~latchkey_client.errors.StorageLost` and
:class:`~latchkey_client.errors.StorageUnavailable`. A prefs value this module cannot
parse is lost too. Nothing is wiped here: what to do with a lost value is the client's
decision.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from typing import Any, Protocol

from ..errors import StorageError, StorageLost, StorageUnavailable
from .base import Storage

__all__ = [
    "AndroidKeystoreStorage",
    "KeystorePrefs",
    "SharedPreferencesStore",
    "android_box",
    "java_bytes",
]

# v1 was iv and ciphertext apart; it never reached a phone (its save failed on the
# pyjnius overload bug), so there is nothing to migrate.
_FORMAT = "v2:"
_HELPER = "org.latchkey.KeystoreBox"
_LOST = f"{_HELPER}$Lost"
_UNAVAILABLE = f"{_HELPER}$Unavailable"
# What the helper puts in a message: a Java class name or one of its own words.
_JAVA_NAME = re.compile(r"[A-Za-z0-9_.$-]{1,200}")


class KeystorePrefs(Protocol):
    """One private SharedPreferences file: where the sealed boxes live."""

    def get(self, key: str) -> str | None:
        """Return the string stored under ``key``."""

    def put(self, key: str, value: str) -> None:
        """Store (commit) ``value`` under ``key``; raise if the commit failed."""

    def remove(self, key: str) -> None:
        """Remove ``key``; absent is fine."""


def java_bytes(value: Any) -> bytes:
    """Return a Java ``byte[]`` as pyjnius hands it back (signed ints or bytes) as bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes(b & 0xFF for b in value)


def _autoclass(name: str) -> Any:
    try:
        from jnius import autoclass
    except ImportError as exc:
        raise StorageError("AndroidKeystoreStorage needs latchkey-client[android]") from exc
    return autoclass(name)


def android_box() -> Any:
    """Return the ``KeystoreBox`` over this app's ``AndroidKeyStore`` (phone only)."""
    try:
        return _autoclass("org.latchkey.AndroidKeys").box()
    except StorageError:
        raise
    except Exception as exc:  # no helper class, no JVM: not an Android app
        raise StorageError(
            f"the Android Keystore helper is not available ({type(exc).__name__}); "
            "is the app built with android.add_src = android/src?"
        ) from exc


class SharedPreferencesStore:
    """The activity's private SharedPreferences ``name`` (phone only): the thin seam.

    Through ``AndroidKeys$Prefs``, whose methods have one signature each:
    ``Context.getSharedPreferences`` itself is overloaded, which is what pyjnius
    resolves badly. Writes are ``commit()``-ed; a failed commit raises ``OSError``.
    """

    def __init__(self, name: str) -> None:
        activity = _autoclass("org.kivy.android.PythonActivity").mActivity
        self._prefs = _autoclass("org.latchkey.AndroidKeys$Prefs")(activity, name)

    def get(self, key: str) -> str | None:
        """Return the string stored under ``key``."""
        # pyjnius hands a Java String back as str, and null as None.
        value: str | None = self._prefs.get(key)
        return value

    def put(self, key: str, value: str) -> None:
        """Commit ``value`` under ``key``."""
        if not self._prefs.put(key, value):
            raise OSError("SharedPreferences commit failed")

    def remove(self, key: str) -> None:
        """Commit the removal of ``key``."""
        if not self._prefs.remove(key):
            raise OSError("SharedPreferences commit failed")


def _storage_error(what: str, exc: Exception) -> StorageError:
    """Map a failure of a Java or prefs call onto the storage error tree.

    pyjnius raises ``JavaException`` with the Java class in ``classname``; the helper's
    own message names only exception classes, never data, so it may be shown.
    """
    classname = getattr(exc, "classname", None)
    inner = getattr(exc, "innermessage", None) or ""
    cause = inner if _JAVA_NAME.fullmatch(inner) else type(exc).__name__
    if classname == _LOST:
        return StorageLost(f"Android Keystore {what}: the key or the value is gone ({cause})")
    if classname == _UNAVAILABLE:
        return StorageUnavailable(f"Android Keystore {what}: locked or unavailable ({cause})")
    if isinstance(exc, OSError):
        return StorageUnavailable(f"Android Keystore {what}: SharedPreferences I/O failed")
    return StorageError(f"Android Keystore {what} failed ({classname or type(exc).__name__})")


class AndroidKeystoreStorage(Storage):
    """Store values sealed under a Keystore key, the sealed boxes in SharedPreferences.

    ``box`` is an ``org.latchkey.KeystoreBox`` (default: :func:`android_box`), ``prefs``
    a :class:`KeystorePrefs` (default: :class:`SharedPreferencesStore` ``prefs_name``).
    ``load`` raises ``StorageLost`` for a value that will never decrypt again (restored
    backup, invalidated key, tampering) and ``StorageUnavailable`` while the Keystore
    refuses (not authenticated, locked).
    """

    def __init__(
        self,
        *,
        alias: str = "latchkey",
        prefs_name: str = "latchkey_secure",
        box: Any | None = None,
        prefs: KeystorePrefs | None = None,
    ) -> None:
        self._alias = alias
        #: True over the phone's own AndroidKeyStore (not a test's key store): the DPoP
        #: key then lives in the Keystore too (``dpop_android.py``).
        self.on_device = box is None
        self._box = box if box is not None else android_box()
        self._prefs = prefs if prefs is not None else SharedPreferencesStore(prefs_name)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AndroidKeystoreStorage(alias={self._alias!r})"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # JVM exceptions arrive as jnius.JavaException
            raise _storage_error(what, exc) from exc

    def load(self, key: str) -> str | None:
        """Read and open the value for ``key``."""
        with self._lock:
            raw = self._call("read", self._prefs.get, key)
            if raw is None:
                return None
            try:
                if not raw.startswith(_FORMAT):
                    raise ValueError("unknown format")
                box = base64.b64decode(raw[len(_FORMAT):], validate=True)
            except (ValueError, binascii.Error) as exc:
                raise StorageLost("Android Keystore read: the stored value is unreadable") from exc
            plain = java_bytes(self._call("open", self._box.open, self._alias, box,
                                          key.encode("utf-8")))
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StorageLost("Android Keystore read: the stored value is unreadable") from exc

    def save(self, key: str, value: str) -> None:
        """Seal ``value`` (bound to ``key`` as AAD) and commit it."""
        with self._lock:
            box = java_bytes(self._call("seal", self._box.seal, self._alias,
                                        value.encode("utf-8"), key.encode("utf-8")))
            self._call("write", self._prefs.put, key,
                       _FORMAT + base64.b64encode(box).decode("ascii"))

    def clear(self, key: str) -> None:
        """Remove the value for ``key``."""
        with self._lock:
            self._call("remove", self._prefs.remove, key)
