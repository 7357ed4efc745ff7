"""Sign DPoP proofs with a P-256 key in the Secure Enclave, or the Keychain without one (P2).

PHONE-ONLY, and said so (M1): no Apple OS runs in this repository's tests. What runs here
is the logic around the bridge (the key's life, status codes, the signature encoding),
through a :class:`KeyBridge` test double; :class:`_CtypesKeyBridge` is the small part only
an iPhone runs. It calls Security.framework's C functions through ``ctypes``, as
:mod:`.storage.ios` does (pyobjus cannot call plain C functions):
``SecKeyCreateRandomKey`` with ``kSecAttrTokenIDSecureEnclave`` (the private key is made
inside the enclave and can never be read out; where there is no enclave, the simulator, a
``ThisDeviceOnly`` Keychain key), ``SecItemCopyMatching`` by application tag,
``SecKeyCopyExternalRepresentation`` of the public key (``04 || x || y``) and
``SecKeyCreateSignature`` with ``ecdsaSignatureMessageX962SHA256`` (DER, turned into the
JWS ``r || s`` here). Only those calls are here; the cached signer, load-or-create and
forgetting a lost key are :class:`~.dpop_keys.PlatformDeviceKey`'s. Statuses map as the
refresh token's do: locked is :class:`DPoPKeyUnavailableError`, gone is
:class:`DPoPKeyLostError`.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

from .dpop_keys import PlatformDeviceKey
from .errors import DPoPKeyLostError, DPoPKeyUnavailableError
from .storage.ios import _LOST, _UNAVAILABLE, ERR_SEC_ITEM_NOT_FOUND, ERR_SEC_SUCCESS

__all__ = ["IOSDeviceKey", "KeyBridge", "ecdsa_der_to_jose"]


class KeyBridge(Protocol):
    """What the key needs from Security.framework; each call returns an OSStatus first."""

    def public_point(self, tag: bytes) -> tuple[int, bytes | None]:
        """Return ``(status, 04||x||y)`` of the key tagged ``tag``."""
        ...

    def create(self, tag: bytes) -> int:
        """Create a permanent P-256 signing key tagged ``tag`` (Secure Enclave if any)."""
        ...

    def sign(self, tag: bytes, data: bytes) -> tuple[int, bytes | None]:
        """Return ``(status, DER ECDSA signature)`` of ``data`` (SHA-256)."""
        ...

    def delete(self, tag: bytes) -> int:
        """Delete the key tagged ``tag``."""
        ...


def ecdsa_der_to_jose(der: bytes, size: int = 32) -> bytes:
    """Turn a DER ``SEQUENCE { INTEGER r, INTEGER s }`` into JWS ``r || s`` (RFC 7518 s3.4).

    Short-form lengths only: a P-256 signature's SEQUENCE is at most 72 bytes.
    """

    def read(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
        if at + 2 > len(data) or data[at] != tag or data[at + 1] & 0x80:
            raise ValueError("not a DER ECDSA signature")
        end = at + 2 + data[at + 1]
        if end > len(data):
            raise ValueError("not a DER ECDSA signature")
        return data[at + 2:end], end

    body, end = read(der, 0, 0x30)
    r, at = read(body, 0, 0x02)
    s, at = read(body, at, 0x02)
    if end != len(der) or at != len(body):
        raise ValueError("not a DER ECDSA signature")
    return _fixed(int.from_bytes(r, "big"), size) + _fixed(int.from_bytes(s, "big"), size)


def _fixed(value: int, size: int) -> bytes:
    if value.bit_length() > 8 * size:
        raise ValueError("signature component too large")
    return value.to_bytes(size, "big")


def _fail(what: str, status: int) -> Exception:
    if status in _UNAVAILABLE:
        return DPoPKeyUnavailableError(f"Keychain {what}: locked or unavailable ({status})")
    if status in _LOST or status == ERR_SEC_ITEM_NOT_FOUND:
        return DPoPKeyLostError(f"Keychain {what}: the device key is gone ({status})")
    return DPoPKeyUnavailableError(f"Keychain {what} failed ({status})")


class IOSDeviceKey(PlatformDeviceKey):
    """The installation's DPoP key, tagged ``tag``, in the Secure Enclave (or Keychain)."""

    holder = "iOS Secure Enclave"

    def __init__(self, *, tag: str = "org.latchkey.dpop", bridge: KeyBridge | None = None
                 ) -> None:
        super().__init__()
        self._tag = tag.encode("utf-8")
        self._bridge = bridge

    def _keys(self) -> KeyBridge:
        if self._bridge is None:
            self._bridge = _CtypesKeyBridge()
        return self._bridge

    def _public_point(self, *, create: bool) -> bytes | None:
        bridge = self._keys()
        status, point = bridge.public_point(self._tag)
        if status == ERR_SEC_ITEM_NOT_FOUND and create:
            created = bridge.create(self._tag)
            if created != ERR_SEC_SUCCESS:
                raise _fail("create", created)
            status, point = bridge.public_point(self._tag)
        if status == ERR_SEC_ITEM_NOT_FOUND:
            return None
        if status != ERR_SEC_SUCCESS or point is None:
            raise _fail("read", status)
        if len(point) != 65 or point[0] != 4:
            raise DPoPKeyLostError("Keychain key: not a P-256 public key")
        return point[1:]  # 04 || x || y: the SEC 1 uncompressed form

    def _sign(self, data: bytes) -> bytes:
        status, der = self._keys().sign(self._tag, data)
        if status != ERR_SEC_SUCCESS or der is None:
            raise _fail("sign", status)
        return ecdsa_der_to_jose(der)

    def _delete_key(self) -> None:
        status = self._keys().delete(self._tag)
        if status not in (ERR_SEC_SUCCESS, ERR_SEC_ITEM_NOT_FOUND):
            raise _fail("delete", status)


class _CtypesKeyBridge:  # pragma: no cover - runs only on iOS (docs/MOBILE.md)
    """SecKey* through ctypes: the part of this module only an iPhone runs."""

    def __init__(self) -> None:
        try:
            self._sec = ctypes.cdll.LoadLibrary(
                "/System/Library/Frameworks/Security.framework/Security")
            self._cf = ctypes.cdll.LoadLibrary(
                "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation")
        except OSError as exc:
            raise DPoPKeyUnavailableError("IOSDeviceKey runs only on iOS (or macOS)") from exc
        vp, cf, sec = ctypes.c_void_p, self._cf, self._sec
        for fn, res, args in (
            (cf.CFDataCreate, vp, [vp, ctypes.c_char_p, ctypes.c_long]),
            (cf.CFDataGetBytePtr, vp, [vp]), (cf.CFDataGetLength, ctypes.c_long, [vp]),
            (cf.CFDictionaryCreate, vp, [vp, vp, vp, ctypes.c_long, vp, vp]),
            (cf.CFNumberCreate, vp, [vp, ctypes.c_long, vp]), (cf.CFRelease, None, [vp]),
            (sec.SecKeyCreateRandomKey, vp, [vp, vp]), (sec.SecKeyCopyPublicKey, vp, [vp]),
            (sec.SecKeyCopyExternalRepresentation, vp, [vp, vp]),
            (sec.SecKeyCreateSignature, vp, [vp, vp, vp, vp]),
            (sec.SecAccessControlCreateWithFlags, vp, [vp, vp, ctypes.c_ulong, vp]),
            (sec.SecItemCopyMatching, ctypes.c_int32, [vp, vp]),
            (sec.SecItemDelete, ctypes.c_int32, [vp]),
        ):
            fn.restype, fn.argtypes = res, args  # type: ignore[assignment]

    def _c(self, name: str, lib: Any = None) -> int:
        return ctypes.c_void_p.in_dll(lib or self._sec, name).value or 0

    def _dict(self, pairs: dict[int, Any]) -> int:
        n = len(pairs)
        return int(self._cf.CFDictionaryCreate(
            None, (ctypes.c_void_p * n)(*pairs.keys()), (ctypes.c_void_p * n)(*pairs.values()),
            n, ctypes.addressof(ctypes.c_void_p.in_dll(self._cf, "kCFTypeDictionaryKeyCallBacks")),
            ctypes.addressof(ctypes.c_void_p.in_dll(self._cf, "kCFTypeDictionaryValueCallBacks"))))

    def _data(self, raw: bytes) -> int:
        return int(self._cf.CFDataCreate(None, raw, len(raw)))

    def _bytes(self, ref: int) -> bytes:
        return ctypes.string_at(self._cf.CFDataGetBytePtr(ref), self._cf.CFDataGetLength(ref))

    def _find(self, tag: bytes) -> tuple[int, int]:
        query = self._dict({
            self._c("kSecClass"): self._c("kSecClassKey"),
            self._c("kSecAttrApplicationTag"): self._data(tag),
            self._c("kSecAttrKeyType"): self._c("kSecAttrKeyTypeECSECPrimeRandom"),
            self._c("kSecReturnRef"): self._c("kCFBooleanTrue", self._cf),
        })
        out = ctypes.c_void_p()
        status = int(self._sec.SecItemCopyMatching(query, ctypes.byref(out)))
        self._cf.CFRelease(query)
        return status, out.value or 0

    def public_point(self, tag: bytes) -> tuple[int, bytes | None]:
        status, key = self._find(tag)
        if status != ERR_SEC_SUCCESS:
            return status, None
        public = self._sec.SecKeyCopyPublicKey(key)
        raw = self._sec.SecKeyCopyExternalRepresentation(public, None)
        point = self._bytes(raw) if raw else None
        for ref in (raw, public, key):
            if ref:
                self._cf.CFRelease(ref)
        return status, point

    def create(self, tag: bytes) -> int:
        access = self._sec.SecAccessControlCreateWithFlags(
            None, self._c("kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly"), 1 << 30, None)
        size = ctypes.c_int32(256)
        private = self._dict({self._c("kSecAttrIsPermanent"): self._c("kCFBooleanTrue", self._cf),
                              self._c("kSecAttrApplicationTag"): self._data(tag),
                              self._c("kSecAttrAccessControl"): access})
        base = {self._c("kSecAttrKeyType"): self._c("kSecAttrKeyTypeECSECPrimeRandom"),
                self._c("kSecAttrKeySizeInBits"): self._cf.CFNumberCreate(
                    None, 3, ctypes.byref(size)),
                self._c("kSecPrivateKeyAttrs"): private}
        for enclave in (True, False):  # the simulator has no Secure Enclave
            attrs = dict(base)
            if enclave:
                attrs[self._c("kSecAttrTokenID")] = self._c("kSecAttrTokenIDSecureEnclave")
            query = self._dict(attrs)
            key = self._sec.SecKeyCreateRandomKey(query, None)
            self._cf.CFRelease(query)
            if key:
                self._cf.CFRelease(key)
                return ERR_SEC_SUCCESS
        return -25293  # errSecAuthFailed: no key could be made

    def sign(self, tag: bytes, data: bytes) -> tuple[int, bytes | None]:
        status, key = self._find(tag)
        if status != ERR_SEC_SUCCESS:
            return status, None
        message = self._data(data)
        der = self._sec.SecKeyCreateSignature(
            key, self._c("kSecKeyAlgorithmECDSASignatureMessageX962SHA256"), message, None)
        out = self._bytes(der) if der else None
        for ref in (der, message, key):
            if ref:
                self._cf.CFRelease(ref)
        return (ERR_SEC_SUCCESS, out) if out else (-25293, None)

    def delete(self, tag: bytes) -> int:
        query = self._dict({self._c("kSecClass"): self._c("kSecClassKey"),
                            self._c("kSecAttrApplicationTag"): self._data(tag)})
        status = int(self._sec.SecItemDelete(query))
        self._cf.CFRelease(query)
        return status
