"""Keep secrets in one AES-GCM encrypted file, mode 0600, replaced atomically.

For desktops without a keyring and for headless devices. The 256-bit key comes either from
the keyring (a random key the keyring holds, so the file alone is useless) or from a
passphrase stretched with scrypt (n=2**15, r=8, p=1: about 32 MiB and tens of milliseconds,
once per instance). The file is::

    b"LKF1" | salt (16) | nonce (12) | AES-GCM(key, nonce, json, aad=b"LKF1" | salt)

Each write uses a fresh random nonce and goes to a temporary file in the same directory,
is fsynced, then ``os.replace``-d over the old one: a crash leaves either the old or the
new file, never half of one.

Failures are typed (M2). A file that fails authentication (wrong or rotated passphrase,
another key, tampering), is truncated or is not a Latchkey file raises ``StorageLost``:
nothing will read it again. ``clear`` still works on such a file (it deletes it: every
value in it is lost alike), while ``save`` refuses, so a mistyped passphrase never
overwrites a file the right one could read. A permission or I/O error raises
``StorageUnavailable``: the file is still there, try later.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

from ..errors import ConfigurationError, StorageError, StorageLost, StorageUnavailable
from .base import Storage

__all__ = ["EncryptedFileStorage"]

_MAGIC = b"LKF1"
_SALT_BYTES = 16
_NONCE_BYTES = 12
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise StorageError("EncryptedFileStorage needs latchkey-client[file]") from exc
    return AESGCM


class EncryptedFileStorage(Storage):
    """Store all values in one encrypted file at ``path``.

    Give exactly one of ``passphrase`` (stretched with scrypt), ``key`` (32 raw bytes you
    manage) or ``keyring_service`` (a random key generated once and kept in the OS keyring).
    ``lock_path`` defaults to ``path`` + ``.lock`` so processes sharing the file also share
    the refresh lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        key: bytes | None = None,
        keyring_service: str | None = None,
    ) -> None:
        if sum(x is not None for x in (passphrase, key, keyring_service)) != 1:
            raise ConfigurationError("give exactly one of passphrase, key or keyring_service")
        if key is not None and len(key) != 32:
            raise ConfigurationError("key must be 32 bytes")
        if passphrase is not None and not passphrase:
            raise ConfigurationError("passphrase must not be empty")
        self._aesgcm = _aesgcm()
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._passphrase = passphrase
        self._raw_key = key
        self._keyring_service = keyring_service
        self._derived: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EncryptedFileStorage({str(self.path)!r})"

    # -- keys --------------------------------------------------------------------------------

    def _key_for(self, salt: bytes) -> bytes:
        if self._raw_key is not None:
            return self._raw_key
        if self._keyring_service is not None:
            return self._keyring_key()
        cached = self._derived.get(salt)
        if cached is None:
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            assert self._passphrase is not None
            cached = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P).derive(
                self._passphrase.encode("utf-8")
            )
            self._derived[salt] = cached
        return cached

    def _keyring_key(self) -> bytes:
        from .keyring import KeyringStorage

        assert self._keyring_service is not None
        store = KeyringStorage(service=self._keyring_service)
        entry = f"file-key:{self.path.resolve()}"
        encoded = store.load(entry)
        if encoded is None:
            encoded = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
            store.save(entry, encoded)
        self._raw_key = base64.b64decode(encoded)
        return self._raw_key

    # -- file --------------------------------------------------------------------------------

    def _read_all(self) -> tuple[dict[str, str], bytes | None]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise StorageUnavailable(
                f"could not read the token file ({type(exc).__name__})"
            ) from exc
        header_len = len(_MAGIC) + _SALT_BYTES
        if len(blob) < header_len + _NONCE_BYTES + 16 or not blob.startswith(_MAGIC):
            raise StorageLost("the token file is truncated or not a Latchkey encrypted file")
        salt = blob[len(_MAGIC) : header_len]
        nonce = blob[header_len : header_len + _NONCE_BYTES]
        key = self._key_for(salt)  # a locked keyring raises StorageUnavailable from here
        try:
            plain = self._aesgcm(key).decrypt(
                nonce, blob[header_len + _NONCE_BYTES :], blob[:header_len]
            )
        except Exception as exc:  # cryptography's InvalidTag: wrong key or tampered file
            raise StorageLost(
                "the token file failed authentication (wrong or rotated key, or tampered)"
            ) from exc
        try:
            values = json.loads(plain)
            if not isinstance(values, dict):
                raise ValueError("not an object")
        except ValueError as exc:  # authentic but not ours: written by a foreign tool
            raise StorageLost("the token file holds no Latchkey values") from exc
        return {str(k): str(v) for k, v in cast("dict[object, object]", values).items()}, salt

    def _write_all(self, values: dict[str, str], salt: bytes | None) -> None:
        if not values:
            self.path.unlink(missing_ok=True)
            return
        salt = salt or secrets.token_bytes(_SALT_BYTES)
        header = _MAGIC + salt
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aesgcm(self._key_for(salt)).encrypt(
            nonce, json.dumps(values).encode("utf-8"), header
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600 from the start: no window where it is world-readable.
        fd, tmp = tempfile.mkstemp(prefix=".latchkey-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header + nonce + sealed)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return  # not every platform can open a directory; the replace is still atomic
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- Storage -----------------------------------------------------------------------------

    def load(self, key: str) -> str | None:
        """Decrypt the file and return the value for ``key``."""
        with self._lock:
            return self._read_all()[0].get(key)

    def save(self, key: str, value: str) -> None:
        """Re-encrypt the file with ``key`` set to ``value``."""
        with self._lock:
            values, salt = self._read_all()
            values[key] = value
            self._write(values, salt)

    def clear(self, key: str) -> None:
        """Re-encrypt the file without ``key`` (delete the file when nothing is left).

        A lost file is deleted: clearing is how a client wipes after ``StorageLost``, and
        no value in that file can be read again anyway.
        """
        values: dict[str, str]
        salt: bytes | None
        with self._lock:
            try:
                values, salt = self._read_all()
            except StorageLost:
                values, salt = {}, None
                self._write(values, salt)
                return
            if key in values:
                del values[key]
                self._write(values, salt)

    def _write(self, values: dict[str, str], salt: bytes | None) -> None:
        try:
            self._write_all(values, salt)
        except OSError as exc:
            raise StorageUnavailable(
                f"could not write the token file ({type(exc).__name__})"
            ) from exc
