"""Sign DPoP proofs with a non-exportable EC P-256 key in the Android Keystore (P2).

The key is generated inside ``AndroidKeyStore`` and signs there: Python only ever sees
the public point and signatures. The signing is Java, ``org.latchkey.DeviceKeys``
(``demo_app/android/src``, shipped through buildozer's ``android.add_src``), for the same
pyjnius overload trouble as :mod:`.storage.android`. Its key store is switchable:
``AndroidKeys.deviceKeys()`` on a phone (the seam only a phone runs:
:func:`android_device_keys`), ``DeviceKeys.inMemory()`` on a desktop JVM, where
tests/sdk/test_android_jvm.py runs this module through the real pyjnius.

Failures are typed as for the refresh token's box: ``KeystoreBox$Lost`` (the key was
invalidated or is missing) is :class:`DPoPKeyLostError`, ``KeystoreBox$Unavailable``
(locked) :class:`DPoPKeyUnavailableError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .dpop import Signer, b64url
from .dpop_keys import DeviceKey
from .errors import DPoPKeyLostError, DPoPKeyUnavailableError, DPoPProofError
from .storage.android import _autoclass, java_bytes

__all__ = ["AndroidDeviceKey", "android_device_keys"]

_LOST = "org.latchkey.KeystoreBox$Lost"
_UNAVAILABLE = "org.latchkey.KeystoreBox$Unavailable"


def android_device_keys() -> Any:
    """Return ``DeviceKeys`` over this app's ``AndroidKeyStore`` (phone only)."""
    try:
        return _autoclass("org.latchkey.AndroidKeys").deviceKeys()
    except Exception as exc:  # no helper class, no JVM: not an Android app
        raise DPoPKeyUnavailableError(
            f"the Android Keystore signing helper is not available ({type(exc).__name__}); "
            "is the app built with android.add_src = android/src?"
        ) from exc


def _key_error(what: str, exc: Exception) -> DPoPProofError:
    classname = getattr(exc, "classname", None)
    if classname == _LOST:
        return DPoPKeyLostError(f"Android Keystore {what}: the device key is gone")
    if classname == _UNAVAILABLE:
        return DPoPKeyUnavailableError(f"Android Keystore {what}: locked or unavailable")
    return DPoPKeyUnavailableError(
        f"Android Keystore {what} failed ({classname or type(exc).__name__})")


class _KeystoreSigner:
    """The Keystore key ``alias`` behind the :class:`~.dpop.Signer` interface."""

    alg = "ES256"

    def __init__(self, helper: Any, alias: str, point: bytes,
                 forget: Callable[[], None]) -> None:
        self._helper = helper
        self._alias = alias
        self._forget = forget
        self._jwk = {"kty": "EC", "crv": "P-256", "x": b64url(point[:32]),
                     "y": b64url(point[32:])}

    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    def sign(self, data: bytes) -> bytes:
        try:
            return java_bytes(self._helper.sign(self._alias, data))
        except Exception as exc:  # JVM exceptions arrive as jnius.JavaException
            error = _key_error("sign", exc)
            if isinstance(error, DPoPKeyLostError):
                self._forget()  # the next sign-in makes a new key, not this dead one
            raise error from exc


class AndroidDeviceKey(DeviceKey):
    """The installation's DPoP key in the Android Keystore, alias ``alias``.

    ``helper`` is an ``org.latchkey.DeviceKeys`` (default: :func:`android_device_keys`,
    resolved at first use).
    """

    holder = "Android Keystore"

    def __init__(self, *, alias: str = "latchkey_dpop", helper: Any | None = None) -> None:
        self._alias = alias
        self._helper = helper
        self._lock = threading.Lock()
        self._signer: _KeystoreSigner | None = None

    def __repr__(self) -> str:
        return f"AndroidDeviceKey(alias={self._alias!r})"

    def _java(self) -> Any:
        if self._helper is None:
            self._helper = android_device_keys()
        return self._helper

    def signer(self, *, create: bool) -> Signer | None:
        with self._lock:
            if self._signer is not None:
                return self._signer
            helper = self._java()
            try:
                if create:
                    helper.ensureKey(self._alias)
                elif not helper.hasKey(self._alias):
                    return None
                point = java_bytes(helper.publicPoint(self._alias))
            except Exception as exc:
                raise _key_error("key", exc) from exc
            if len(point) != 64:
                raise DPoPKeyLostError("Android Keystore key: not a P-256 public key")
            self._signer = _KeystoreSigner(helper, self._alias, point, self._forget)
            return self._signer

    def _forget(self) -> None:
        self._signer = None

    def delete(self) -> None:
        with self._lock:
            self._signer = None
            try:
                self._java().deleteKey(self._alias)
            except Exception as exc:
                raise _key_error("delete", exc) from exc
