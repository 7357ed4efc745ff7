"""Keep secrets under an Android Keystore key: AES-GCM in hardware, ciphertext in prefs.

The Keystore holds a non-exportable AES-256 key (``alias``); values are encrypted with it
(AES/GCM/NoPadding, the Keystore picks the IV) and the ciphertext is kept in private
SharedPreferences. Even a full copy of the app's data directory is useless off the device.

All Android calls go through a small bridge (:class:`AndroidBridge`): the real one uses
pyjnius and is imported only when no bridge is given, so this module imports on a desktop,
and tests drive the storage logic through a desktop bridge.
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Protocol

from ..errors import StorageError
from .base import Storage

__all__ = ["AndroidBridge", "AndroidKeystoreStorage"]

_FORMAT = "v1"


class AndroidBridge(Protocol):
    """What the storage needs from Android; one method per platform call."""

    def encrypt(self, alias: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Encrypt with the Keystore key ``alias`` (created if absent); return (iv, sealed)."""

    def decrypt(self, alias: str, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt with the Keystore key ``alias``; raise on any failure."""

    def delete_key(self, alias: str) -> None:
        """Delete the Keystore key ``alias``."""

    def get(self, prefs: str, key: str) -> str | None:
        """Read a string from private SharedPreferences ``prefs``."""

    def put(self, prefs: str, key: str, value: str) -> None:
        """Write (commit) a string to private SharedPreferences ``prefs``."""

    def remove(self, prefs: str, key: str) -> None:
        """Remove a key from private SharedPreferences ``prefs``."""


class AndroidKeystoreStorage(Storage):
    """Store values encrypted under a Keystore key, ciphertext in SharedPreferences.

    A value that no longer decrypts (the Keystore invalidates keys, e.g. after a device
    reset of the lock screen) is removed and reported as absent: the user signs in again
    rather than the app crashing on start.
    """

    def __init__(
        self,
        *,
        alias: str = "latchkey",
        prefs_name: str = "latchkey_secure",
        bridge: AndroidBridge | None = None,
    ) -> None:
        self._alias = alias
        self._prefs = prefs_name
        self._bridge = bridge if bridge is not None else _PyjniusBridge()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AndroidKeystoreStorage(alias={self._alias!r})"

    def load(self, key: str) -> str | None:
        """Read and decrypt the value for ``key``."""
        with self._lock:
            raw = self._wrap("read", self._bridge.get, self._prefs, key)
            if raw is None:
                return None
            try:
                fmt, iv_b64, sealed_b64 = raw.split(":")
                if fmt != _FORMAT:
                    raise ValueError(fmt)
                plain = self._bridge.decrypt(
                    self._alias, base64.b64decode(iv_b64), base64.b64decode(sealed_b64),
                    key.encode("utf-8"),
                )
            except Exception:  # noqa: BLE001 - bad format, invalidated key, tampering: unusable
                self._wrap("remove", self._bridge.remove, self._prefs, key)
                return None
            return plain.decode("utf-8")

    def save(self, key: str, value: str) -> None:
        """Encrypt ``value`` (bound to ``key`` as AAD) and commit it."""
        with self._lock:
            iv, sealed = self._wrap(
                "encrypt", self._bridge.encrypt, self._alias, value.encode("utf-8"),
                key.encode("utf-8"),
            )
            encoded = ":".join(
                (_FORMAT, base64.b64encode(iv).decode(), base64.b64encode(sealed).decode())
            )
            self._wrap("write", self._bridge.put, self._prefs, key, encoded)

    def clear(self, key: str) -> None:
        """Remove the value for ``key``."""
        with self._lock:
            self._wrap("remove", self._bridge.remove, self._prefs, key)

    @staticmethod
    def _wrap(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # JVM exceptions arrive as jnius.JavaException
            raise StorageError(f"Android Keystore {what} failed ({type(exc).__name__})") from exc


def _to_bytes(java_bytes: Any) -> bytes:
    """Turn a Java byte[] as pyjnius returns it (signed ints) into bytes."""
    return bytes(b & 0xFF for b in java_bytes)


class _PyjniusBridge:
    """The real bridge: Android Keystore and SharedPreferences through pyjnius.

    Runs only on a device; every class is looked up lazily so import never needs a JVM.
    """

    def __init__(self) -> None:
        try:
            from jnius import autoclass
        except ImportError as exc:
            raise StorageError("AndroidKeystoreStorage needs latchkey-client[android]") from exc
        self._autoclass = autoclass
        self._context = autoclass("org.kivy.android.PythonActivity").mActivity

    def _key(self, alias: str) -> Any:
        ac = self._autoclass
        store = ac("java.security.KeyStore").getInstance("AndroidKeyStore")
        store.load(None)
        if store.containsAlias(alias):
            return store.getKey(alias, None)
        props = ac("android.security.keystore.KeyProperties")
        spec = (
            ac("android.security.keystore.KeyGenParameterSpec$Builder")(
                alias, props.PURPOSE_ENCRYPT | props.PURPOSE_DECRYPT
            )
            .setBlockModes([props.BLOCK_MODE_GCM])
            .setEncryptionPaddings([props.ENCRYPTION_PADDING_NONE])
            .setKeySize(256)
            .build()
        )
        gen = ac("javax.crypto.KeyGenerator").getInstance(
            props.KEY_ALGORITHM_AES, "AndroidKeyStore"
        )
        gen.init(spec)
        return gen.generateKey()

    def encrypt(self, alias: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        cipher_cls = self._autoclass("javax.crypto.Cipher")
        cipher = cipher_cls.getInstance("AES/GCM/NoPadding")
        cipher.init(cipher_cls.ENCRYPT_MODE, self._key(alias))
        cipher.updateAAD(aad)
        sealed = cipher.doFinal(plaintext)
        return _to_bytes(cipher.getIV()), _to_bytes(sealed)

    def decrypt(self, alias: str, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        ac = self._autoclass
        cipher_cls = ac("javax.crypto.Cipher")
        cipher = cipher_cls.getInstance("AES/GCM/NoPadding")
        cipher.init(
            cipher_cls.DECRYPT_MODE,
            self._key(alias),
            ac("javax.crypto.spec.GCMParameterSpec")(128, iv),
        )
        cipher.updateAAD(aad)
        return _to_bytes(cipher.doFinal(sealed))

    def delete_key(self, alias: str) -> None:
        store = self._autoclass("java.security.KeyStore").getInstance("AndroidKeyStore")
        store.load(None)
        store.deleteEntry(alias)

    def _prefs(self, name: str) -> Any:
        mode = self._autoclass("android.content.Context").MODE_PRIVATE
        return self._context.getSharedPreferences(name, mode)

    def get(self, prefs: str, key: str) -> str | None:
        return self._prefs(prefs).getString(key, None)

    def put(self, prefs: str, key: str, value: str) -> None:
        if not self._prefs(prefs).edit().putString(key, value).commit():
            raise OSError("SharedPreferences commit failed")

    def remove(self, prefs: str, key: str) -> None:
        self._prefs(prefs).edit().remove(key).commit()
