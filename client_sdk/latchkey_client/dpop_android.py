"""Sign DPoP proofs with a non-exportable EC P-256 key in the Android Keystore (P2).

The key is generated inside ``AndroidKeyStore`` and signs there: Python only ever sees
the public point and signatures. The signing is Java, ``org.latchkey.DeviceKeys``
(``demo_app/android/src``, shipped through buildozer's ``android.add_src``), for the same
pyjnius overload trouble as :mod:`.storage.android`. Its key store is switchable:
``AndroidKeys.deviceKeys()`` on a phone (the seam only a phone runs:
:func:`android_device_keys`), ``DeviceKeys.inMemory()`` on a desktop JVM, where
tests/sdk/test_android_jvm.py runs this module through the real pyjnius.

Only the Keystore calls are here; the cached signer, load-or-create and forgetting a lost
key are :class:`~.dpop_keys.PlatformDeviceKey`'s. Failures are typed as for the refresh
token's box: ``KeystoreBox$Lost`` (the key was invalidated or is missing) is
:class:`DPoPKeyLostError`, ``KeystoreBox$Unavailable`` (locked)
:class:`DPoPKeyUnavailableError`.
"""

from __future__ import annotations

from typing import Any

from .dpop_keys import PlatformDeviceKey
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


class AndroidDeviceKey(PlatformDeviceKey):
    """The installation's DPoP key in the Android Keystore, alias ``alias``.

    ``helper`` is an ``org.latchkey.DeviceKeys`` (default: :func:`android_device_keys`,
    resolved at first use).
    """

    holder = "Android Keystore"

    def __init__(self, *, alias: str = "latchkey_dpop", helper: Any | None = None) -> None:
        super().__init__()
        self._alias = alias
        self._helper = helper

    def __repr__(self) -> str:
        return f"AndroidDeviceKey(alias={self._alias!r})"

    def _java(self) -> Any:
        if self._helper is None:
            self._helper = android_device_keys()
        return self._helper

    def _public_point(self, *, create: bool) -> bytes | None:
        helper = self._java()
        try:
            if create:
                helper.ensureKey(self._alias)
            elif not helper.hasKey(self._alias):
                return None
            point = java_bytes(helper.publicPoint(self._alias))
        except Exception as exc:  # JVM exceptions arrive as jnius.JavaException
            raise _key_error("key", exc) from exc
        if len(point) != 64:
            raise DPoPKeyLostError("Android Keystore key: not a P-256 public key")
        return point

    def _sign(self, data: bytes) -> bytes:
        try:
            return java_bytes(self._java().sign(self._alias, data))
        except Exception as exc:
            raise _key_error("sign", exc) from exc

    def _delete_key(self) -> None:
        try:
            self._java().deleteKey(self._alias)
        except Exception as exc:
            raise _key_error("delete", exc) from exc
