"""Keep this installation's DPoP key: one key pair, made at first sign-in, never exported.

A :class:`DeviceKey` is where the key lives and hands out a :class:`~.dpop.Signer` over it.
One class per platform, as for the refresh token (P2):

* :class:`AndroidDeviceKey` (``dpop_android.py``): a non-exportable EC P-256 key in the
  Android Keystore, signing in Java (``org.latchkey.DeviceKeys``) through pyjnius;
* :class:`IOSDeviceKey` (``dpop_ios.py``): a P-256 key in the Secure Enclave (or the
  Keychain where there is none), signing through Security.framework over ctypes;
* :class:`StoredDeviceKey` here: a software key (``cryptography``, the ``dpop`` extra)
  whose private half is kept in the session's :class:`~.storage.base.Storage` under
  ``dpop_key``, so it is exactly as safe as the refresh token beside it (the keyring, the
  encrypted file; in memory with the default storage).

The two platform keys share one skeleton, :class:`PlatformDeviceKey` (the cached signer,
load-or-create, forgetting a key the platform reports gone, delete); their modules hold
only the platform calls.

The rule for its life (docs/SDK.md "DPoP"): the key is created at the first sign-in and
reused by every later one on this installation; logout keeps it (the server's session is
what ends, and a key that is never sent anywhere links nothing the device id does not);
``forget_device()`` deletes it. A key the platform reports gone is :class:`DPoPKeyLostError`
(sign out, a new key at the next sign-in); a locked one :class:`DPoPKeyUnavailableError`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from abc import ABC, abstractmethod
from typing import Any

from .dpop import Signer, b64url
from .errors import (
    ConfigurationError,
    DPoPKeyLostError,
    DPoPKeyUnavailableError,
    StorageLost,
    StorageUnavailable,
)
from .storage.base import MemoryStorage, Storage

__all__ = [
    "DEVICE_KEY_NAME",
    "SUPPORTED_ALGS",
    "DeviceKey",
    "PlatformDeviceKey",
    "StoredDeviceKey",
    "default_device_key",
]

#: The storage key a software device key is kept under, beside ``refresh_token``.
DEVICE_KEY_NAME = "dpop_key"
#: What the SDK signs with: ES256 everywhere (every platform keystore has P-256), EdDSA
#: (Ed25519) for software keys that ask for it.
SUPPORTED_ALGS = ("ES256", "EdDSA")


class DeviceKey(ABC):
    """Where one installation's DPoP key lives.

    ``holder`` names the store for people ("Android Keystore", "OS keyring"); the demo's
    session screen shows it. Implementations are thread-safe and cache the signer, so a
    proof costs one signature, not a key store read.
    """

    holder: str = "unknown"

    @abstractmethod
    def signer(self, *, create: bool) -> Signer | None:
        """Return the key's signer; make the key first if ``create`` and there is none.

        ``None`` when there is no key and ``create`` is false. Raises
        :class:`DPoPKeyUnavailableError` or :class:`DPoPKeyLostError`.
        """

    @abstractmethod
    def delete(self) -> None:
        """Delete the key for good ("forget this device"); absent is fine."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(holder={self.holder!r})"


class PlatformDeviceKey(DeviceKey):
    """A P-256 key a platform key store makes, holds and signs with (Keystore, Enclave).

    The skeleton every platform shares lives here: one lock, the signer cached after the
    first load-or-create, a signer that forgets itself when the platform reports its key
    gone (so the next sign-in makes a new key, not the dead one), and ``delete`` dropping
    the cache before the key. A platform module holds only its platform calls:
    :meth:`_public_point`, :meth:`_sign` and :meth:`_delete_key`, each raising
    :class:`DPoPKeyLostError` or :class:`DPoPKeyUnavailableError` as its platform says.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signer: _PlatformSigner | None = None

    @abstractmethod
    def _public_point(self, *, create: bool) -> bytes | None:
        """Return the key's public point ``x || y`` (64 bytes), making the key first if
        ``create`` and there is none; ``None`` when there is none and ``create`` is false."""

    @abstractmethod
    def _sign(self, data: bytes) -> bytes:
        """Return the JWS ES256 signature ``r || s`` of ``data`` by the platform's key."""

    @abstractmethod
    def _delete_key(self) -> None:
        """Delete the platform's key; absent is fine."""

    def signer(self, *, create: bool) -> Signer | None:
        with self._lock:
            if self._signer is not None:
                return self._signer
            point = self._public_point(create=create)
            if point is None:
                return None
            self._signer = _PlatformSigner(self, point)
            return self._signer

    def _forget(self) -> None:
        self._signer = None

    def delete(self) -> None:
        with self._lock:
            self._signer = None
            self._delete_key()


class _PlatformSigner:
    """A :class:`PlatformDeviceKey` behind the :class:`~.dpop.Signer` interface."""

    alg = "ES256"

    def __init__(self, key: PlatformDeviceKey, point: bytes) -> None:
        self._key = key
        self._jwk = {"kty": "EC", "crv": "P-256", "x": b64url(point[:32]),
                     "y": b64url(point[32:])}

    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, data: bytes) -> bytes:
        try:
            return self._key._sign(data)
        except DPoPKeyLostError:
            self._key._forget()  # the next sign-in makes a new key, not this dead one
            raise

    def __repr__(self) -> str:
        return f"PlatformSigner(key={self._key!r})"


def _crypto() -> Any:
    """Import ``cryptography`` (the ``dpop`` extra) or say how to get it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
    except ImportError as exc:
        raise ConfigurationError(
            "DPoP with a software key needs latchkey-client[dpop] (cryptography); "
            "install it, use a platform key store, or pass dpop=False"
        ) from exc
    return ec, ed25519, utils


def _int_b64(value: int, size: int) -> str:
    return b64url(value.to_bytes(size, "big"))


class _SoftwareSigner:
    """A ``cryptography`` private key behind the :class:`~.dpop.Signer` interface."""

    def __init__(self, key: Any, alg: str) -> None:
        self._key = key
        self._alg = alg
        self._ecdsa: Any = None
        public = key.public_key()
        if alg == "ES256":
            from cryptography.hazmat.primitives import hashes

            ec, _, self._utils = _crypto()
            self._ecdsa = ec.ECDSA(hashes.SHA256())
            numbers = public.public_numbers()
            self._jwk = {"kty": "EC", "crv": "P-256", "x": _int_b64(numbers.x, 32),
                         "y": _int_b64(numbers.y, 32)}
        else:
            from cryptography.hazmat.primitives import serialization

            raw = public.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
            self._jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}

    @property
    def alg(self) -> str:
        return self._alg

    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, data: bytes) -> bytes:
        if self._ecdsa is None:  # EdDSA
            signature: bytes = self._key.sign(data)
            return signature
        r, s = self._utils.decode_dss_signature(self._key.sign(data, self._ecdsa))
        return int(r).to_bytes(32, "big") + int(s).to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"SoftwareSigner(alg={self._alg!r})"  # never the key


def _b64url_int(text: str) -> int:
    import base64

    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


class StoredDeviceKey(DeviceKey):
    """A software key kept in ``storage`` like the refresh token (desktop, tests).

    The private key is stored as a private JWK under :data:`DEVICE_KEY_NAME`; the storage
    seals it (keyring, AES-GCM file). ``alg`` ``ES256`` (default) or ``EdDSA``.
    """

    def __init__(self, storage: Storage, *, alg: str = "ES256") -> None:
        if alg not in SUPPORTED_ALGS:
            raise ConfigurationError(f"DPoP alg must be one of {SUPPORTED_ALGS}")
        _crypto()  # fail at construction, not at the first sign-in
        self._storage = storage
        self._alg = alg
        self._lock = threading.Lock()
        self._signer: _SoftwareSigner | None = None
        self.holder = _holder_of(storage)

    def __repr__(self) -> str:
        return f"StoredDeviceKey(alg={self._alg!r}, storage={self._storage!r})"

    def signer(self, *, create: bool) -> Signer | None:
        with self._lock:
            if self._signer is not None:
                return self._signer
            try:
                try:
                    raw = self._storage.load(DEVICE_KEY_NAME)
                    signer = None if raw is None else self._parse(raw)
                except (StorageLost, DPoPKeyLostError):
                    if not create:
                        raise
                    raw, signer = None, None  # a sign-in replaces a key that is gone
                if signer is None and create:
                    signer = self._parse(self._create())
            except StorageUnavailable as exc:
                raise DPoPKeyUnavailableError(
                    "the device key's store is locked or unavailable") from exc
            except StorageLost as exc:
                raise DPoPKeyLostError("the device key can no longer be read") from exc
            self._signer = signer
            return signer

    def _create(self) -> str:
        ec, ed25519, _ = _crypto()
        if self._alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
            doc = {"alg": "ES256", "d": _int_b64(key.private_numbers().private_value, 32)}
        else:
            from cryptography.hazmat.primitives import serialization

            key = ed25519.Ed25519PrivateKey.generate()
            raw = key.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
            doc = {"alg": "EdDSA", "d": b64url(raw)}
        value = json.dumps(doc)
        self._storage.save(DEVICE_KEY_NAME, value)
        return value

    def _parse(self, raw: str) -> _SoftwareSigner:
        ec, ed25519, _ = _crypto()
        try:
            doc = json.loads(raw)
            alg, d = doc["alg"], doc["d"]
            if alg == "ES256":
                key = ec.derive_private_key(_b64url_int(d), ec.SECP256R1())
            elif alg == "EdDSA":
                key = ed25519.Ed25519PrivateKey.from_private_bytes(
                    _b64url_int(d).to_bytes(32, "big"))
            else:
                raise ValueError("unknown alg")
        except (ValueError, KeyError, TypeError) as exc:
            raise DPoPKeyLostError("the stored device key is unreadable") from exc
        return _SoftwareSigner(key, alg)

    def delete(self) -> None:
        with self._lock:
            self._signer = None
            try:
                self._storage.clear(DEVICE_KEY_NAME)
            except StorageUnavailable as exc:
                raise DPoPKeyUnavailableError("the device key's store is locked") from exc
            except StorageLost:
                pass  # gone already


def default_device_key(storage: Storage, *, persist: bool) -> DeviceKey:
    """Return the key store that goes with ``storage``: the platform's on a phone.

    On a phone (an :class:`~.storage.android.AndroidKeystoreStorage` or
    :class:`~.storage.ios.IOSKeychainStorage` over the real platform, or any storage in an
    app running on Android or iOS) the key is the platform's: never exported, so it may
    outlive the process whatever the app chose, and no ``cryptography`` is needed there.
    Elsewhere a software key is kept exactly as the refresh token is kept: in ``storage``
    when ``persist`` (``stay_signed_in``), else in this process's memory only (S1: nothing
    on disk unless the app asked).
    """
    from .storage.android import AndroidKeystoreStorage
    from .storage.ios import IOSKeychainStorage

    platform = running_on()
    if (isinstance(storage, AndroidKeystoreStorage) and storage.on_device) or (
            platform == "android"):
        from .dpop_android import AndroidDeviceKey

        return AndroidDeviceKey()
    if (isinstance(storage, IOSKeychainStorage) and storage.on_device) or platform == "ios":
        from .dpop_ios import IOSDeviceKey

        return IOSDeviceKey()
    return StoredDeviceKey(storage if persist else MemoryStorage())


def running_on() -> str | None:
    """Say whether this app runs on ``"android"`` or ``"ios"`` (else ``None``).

    Python 3.13 names both in ``sys.platform``; before it, python-for-android sets
    ``ANDROID_ARGUMENT`` and kivy-ios ``KIVY_BUILD=ios`` in the app's environment.
    """
    if sys.platform == "android" or "ANDROID_ARGUMENT" in os.environ:
        return "android"
    if sys.platform == "ios" or os.environ.get("KIVY_BUILD") == "ios":
        return "ios"
    return None


def _holder_of(storage: Storage) -> str:
    """Name the store a software key lives in, for people."""
    name = type(storage).__name__
    return {
        "KeyringStorage": "OS keyring",
        "EncryptedFileStorage": "encrypted file",
        "MemoryStorage": "app memory, this run only",
        "AndroidKeystoreStorage": "Android Keystore (sealed software key)",
        "IOSKeychainStorage": "iOS Keychain",
    }.get(name, name)
