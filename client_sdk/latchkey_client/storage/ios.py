"""Keep secrets in the iOS Keychain as generic-password items.

Items are ``kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly``: readable for a background
refresh once the phone has been unlocked after boot, never migrated to a backup or another
device. All Keychain calls go through a small bridge (:class:`KeychainBridge`) returning
``OSStatus`` codes, so the storage logic (update-or-add, not-found, locked device) is tested
on a desktop with a fake bridge: no iOS runs in this repository's tests, so what is proven
is the mapping from status codes, not Security.framework itself.

Statuses are typed (M2): ``errSecInteractionNotAllowed`` (locked since boot) and the other
transient ones raise ``StorageUnavailable``; a present item that no longer opens
(``errSecAuthFailed``, ``errSecDecode``) raises ``StorageLost``.

The real bridge calls Security.framework's ``SecItem*`` C functions through ``ctypes``
(in the standard library and in kivy-ios' Python): pyobjus reaches Objective-C classes but
cannot call plain C functions, and ``SecItem*`` are C functions. It is loaded lazily.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Protocol

from ..errors import StorageError, StorageLost, StorageUnavailable
from .base import Storage

__all__ = ["IOSKeychainStorage", "KeychainBridge"]

ERR_SEC_SUCCESS = 0
ERR_SEC_ITEM_NOT_FOUND = -25300
ERR_SEC_DUPLICATE_ITEM = -25299
ERR_SEC_INTERACTION_NOT_ALLOWED = -25308  # device locked since boot
ERR_SEC_NOT_AVAILABLE = -25291  # no keychain available (yet)
ERR_SEC_MISSING_ENTITLEMENT = -34018  # the keychain daemon could not check the app (transient)
ERR_SEC_USER_CANCELED = -128  # the user dismissed an authentication prompt
ERR_SEC_AUTH_FAILED = -25293  # the item's protection no longer opens (e.g. biometry changed)
ERR_SEC_NO_SUCH_KEYCHAIN = -25294
ERR_SEC_DECODE = -26275  # the item's data cannot be decoded

# M2: "try later, wipe nothing" versus "the secret is gone". Absent items are neither: a
# ThisDeviceOnly item never travels in a backup, so a restored phone reads "not signed in".
_UNAVAILABLE = frozenset({
    ERR_SEC_INTERACTION_NOT_ALLOWED, ERR_SEC_NOT_AVAILABLE, ERR_SEC_MISSING_ENTITLEMENT,
    ERR_SEC_USER_CANCELED,
})
_LOST = frozenset({ERR_SEC_AUTH_FAILED, ERR_SEC_NO_SUCH_KEYCHAIN, ERR_SEC_DECODE})


class KeychainBridge(Protocol):
    """What the storage needs from the Keychain; each call returns an OSStatus."""

    def copy(self, service: str, account: str) -> tuple[int, bytes | None]:
        """Return ``(status, data)`` of the item."""
        ...

    def add(self, service: str, account: str, data: bytes) -> int:
        """Add a new item."""
        ...

    def update(self, service: str, account: str, data: bytes) -> int:
        """Replace the data of an existing item."""
        ...

    def delete(self, service: str, account: str) -> int:
        """Delete the item."""
        ...


class IOSKeychainStorage(Storage):
    """Store each value as one Keychain item ``(service, key)``."""

    def __init__(self, *, service: str = "latchkey", bridge: KeychainBridge | None = None) -> None:
        self._service = service
        #: True over the real Keychain (not a test bridge): the DPoP key then lives in the
        #: Secure Enclave or the Keychain too (``dpop_ios.py``).
        self.on_device = bridge is None
        self._bridge = bridge if bridge is not None else _CtypesKeychainBridge()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IOSKeychainStorage(service={self._service!r})"

    @staticmethod
    def _fail(what: str, status: int) -> StorageError:
        """Map an OSStatus onto the storage error tree (M2)."""
        if status == ERR_SEC_INTERACTION_NOT_ALLOWED:
            return StorageUnavailable(f"Keychain {what} refused: the device is locked")
        if status in _UNAVAILABLE:
            return StorageUnavailable(f"Keychain {what} unavailable for now (OSStatus {status})")
        if status in _LOST:
            return StorageLost(f"Keychain {what}: the item no longer opens (OSStatus {status})")
        return StorageError(f"Keychain {what} failed (OSStatus {status})")

    def load(self, key: str) -> str | None:
        """Return the item's data for ``key``."""
        with self._lock:
            status, data = self._bridge.copy(self._service, key)
        if status == ERR_SEC_ITEM_NOT_FOUND:
            return None
        if status != ERR_SEC_SUCCESS:
            raise self._fail("read", status)
        try:
            if data is None:
                raise ValueError("no data")
            return data.decode("utf-8")
        except ValueError as exc:  # UnicodeDecodeError included: not a value this SDK wrote
            raise StorageLost("Keychain read: the item holds no readable value") from exc

    def save(self, key: str, value: str) -> None:
        """Update the item for ``key``, adding it if it does not exist yet."""
        data = value.encode("utf-8")
        with self._lock:
            status = self._bridge.update(self._service, key, data)
            if status == ERR_SEC_ITEM_NOT_FOUND:
                status = self._bridge.add(self._service, key, data)
                if status == ERR_SEC_DUPLICATE_ITEM:  # raced with another writer
                    status = self._bridge.update(self._service, key, data)
        if status != ERR_SEC_SUCCESS:
            raise self._fail("write", status)

    def clear(self, key: str) -> None:
        """Delete the item for ``key``, if any."""
        with self._lock:
            status = self._bridge.delete(self._service, key)
        if status not in (ERR_SEC_SUCCESS, ERR_SEC_ITEM_NOT_FOUND):
            raise self._fail("delete", status)


# A CFTypeRef as a ``c_void_p`` restype hands it back: an address, or None for NULL. The
# SecItem* functions' restype is ``c_int32``, so their OSStatus is always an int.
_CFRef = int | None


class _CtypesKeychainBridge:
    """The real bridge: SecItem* and CoreFoundation through ctypes. Runs only on Apple OSes."""

    def __init__(self) -> None:
        try:
            self._sec = ctypes.cdll.LoadLibrary(
                "/System/Library/Frameworks/Security.framework/Security"
            )
            self._cf = ctypes.cdll.LoadLibrary(
                "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"
            )
        except OSError as exc:
            raise StorageError("IOSKeychainStorage runs only on iOS (or macOS)") from exc
        cf, vp = self._cf, ctypes.c_void_p
        cf.CFStringCreateWithCString.restype = vp
        cf.CFStringCreateWithCString.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint32]
        cf.CFDataCreate.restype = vp
        cf.CFDataCreate.argtypes = [vp, ctypes.c_char_p, ctypes.c_long]
        cf.CFDataGetBytePtr.restype = vp
        cf.CFDataGetBytePtr.argtypes = [vp]
        cf.CFDataGetLength.restype = ctypes.c_long
        cf.CFDataGetLength.argtypes = [vp]
        cf.CFDictionaryCreate.restype = vp
        cf.CFDictionaryCreate.argtypes = [vp, vp, vp, ctypes.c_long, vp, vp]
        cf.CFRelease.argtypes = [vp]
        for name in ("SecItemAdd", "SecItemCopyMatching", "SecItemUpdate", "SecItemDelete"):
            getattr(self._sec, name).restype = ctypes.c_int32

    def _const(self, lib: Any, name: str) -> int:
        return ctypes.c_void_p.in_dll(lib, name).value or 0

    def _str(self, text: str) -> _CFRef:
        ref: _CFRef = self._cf.CFStringCreateWithCString(None, text.encode("utf-8"), 0x08000100)
        return ref

    def _dict(self, pairs: dict[str, Any]) -> _CFRef:
        keys = [self._const(self._sec, k) for k in pairs]
        values = [v for v in pairs.values()]
        n = len(keys)
        ref: _CFRef = self._cf.CFDictionaryCreate(
            None,
            (ctypes.c_void_p * n)(*keys),
            (ctypes.c_void_p * n)(*values),
            n,
            ctypes.addressof(ctypes.c_void_p.in_dll(self._cf, "kCFTypeDictionaryKeyCallBacks")),
            ctypes.addressof(ctypes.c_void_p.in_dll(self._cf, "kCFTypeDictionaryValueCallBacks")),
        )
        return ref

    def _query(self, service: str, account: str, **extra: Any) -> _CFRef:
        pairs = {
            "kSecClass": self._const(self._sec, "kSecClassGenericPassword"),
            "kSecAttrService": self._str(service),
            "kSecAttrAccount": self._str(account),
        }
        pairs.update(extra)
        return self._dict(pairs)

    def copy(self, service: str, account: str) -> tuple[int, bytes | None]:
        query = self._query(
            service, account,
            kSecReturnData=self._const(self._cf, "kCFBooleanTrue"),
            kSecMatchLimit=self._const(self._sec, "kSecMatchLimitOne"),
        )
        out = ctypes.c_void_p()
        status: int = self._sec.SecItemCopyMatching(ctypes.c_void_p(query), ctypes.byref(out))
        self._cf.CFRelease(query)
        if status != ERR_SEC_SUCCESS or not out.value:
            return status, None
        length = self._cf.CFDataGetLength(out)
        data = ctypes.string_at(self._cf.CFDataGetBytePtr(out), length)
        self._cf.CFRelease(out)
        return status, data

    def _data(self, data: bytes) -> _CFRef:
        ref: _CFRef = self._cf.CFDataCreate(None, data, len(data))
        return ref

    def add(self, service: str, account: str, data: bytes) -> int:
        query = self._query(
            service, account,
            kSecValueData=self._data(data),
            kSecAttrAccessible=self._const(
                self._sec, "kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly"
            ),
        )
        status: int = self._sec.SecItemAdd(ctypes.c_void_p(query), None)
        self._cf.CFRelease(query)
        return status

    def update(self, service: str, account: str, data: bytes) -> int:
        query = self._query(service, account)
        changes = self._dict({"kSecValueData": self._data(data)})
        status: int = self._sec.SecItemUpdate(ctypes.c_void_p(query), ctypes.c_void_p(changes))
        self._cf.CFRelease(query)
        self._cf.CFRelease(changes)
        return status

    def delete(self, service: str, account: str) -> int:
        query = self._query(service, account)
        status: int = self._sec.SecItemDelete(ctypes.c_void_p(query))
        self._cf.CFRelease(query)
        return status
