"""Own the server's key material: Ed25519 signing keys and the HMAC secret.

Both are generated from the OS CSPRNG on first start into ``<instance>/keys`` with mode
0600, or read from files an operator supplies. Signing keys live in a small keyring so that
rotation never logs anyone out: the newest key signs, and retired keys keep verifying (and
stay in the JWKS) until every token they signed has expired. The ``kid`` is the RFC 7638
JWK thumbprint, so it is stable, public and says nothing about the server.

The single HMAC secret is never used directly; purpose-specific subkeys are derived from it
(refresh-token hashing, successor derivation, log pseudonyms) so one use cannot be turned
into another.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .config import Settings

__all__ = ["HmacKeys", "KeyRing", "SigningKey", "b64url", "ensure_key_material"]

HMAC_SECRET_BYTES = 32


def b64url(data: bytes) -> str:
    """Encode bytes as unpadded base64url, the alphabet of every Latchkey token."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600, refusing to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key pair with its thumbprint ``kid`` and life-cycle times."""

    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    created_at: float
    retired_at: float | None = None

    def public_jwk(self) -> dict[str, Any]:
        """Return the public key as a JWK (RFC 8037 OKP)."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.kid,
                "alg": "EdDSA", "use": "sig"}


def _thumbprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _load_private_pem(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class KeyRing:
    """The signing keys: one current, older ones verifying until their tokens expire.

    The manifest (``keys/manifest.json``) records each key's creation and retirement;
    workers notice a rotation by the manifest's modification time, so a ``keys rotate``
    from the CLI reaches every worker without a restart.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.instance_path / "keys"
        self._manifest = self._dir / "manifest.json"
        self._lock = threading.Lock()
        self._mtime: float = -1.0
        self._checked_at: float = 0.0
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self.reload()

    # -- loading --------------------------------------------------------------------
    def reload(self) -> None:
        """Read the keys from disk (or the operator's key file)."""
        if self._settings.signing_key_file is not None:
            private = _load_private_pem(self._settings.signing_key_file)
            key = SigningKey(_thumbprint(private.public_key()), private, private.public_key(),
                             created_at=0.0)
            self._keys, self._current = {key.kid: key}, key
            return
        ensure_signing_key(self._settings)
        entries = json.loads(self._manifest.read_text())["keys"]
        keys: dict[str, SigningKey] = {}
        for entry in entries:
            private = _load_private_pem(self._dir / f"{entry['kid']}.pem")
            keys[entry["kid"]] = SigningKey(
                entry["kid"], private, private.public_key(), entry["created_at"],
                entry.get("retired_at"),
            )
        current = [k for k in keys.values() if k.retired_at is None]
        if not current:
            raise ValueError("the key manifest has no current signing key")
        with self._lock:
            self._keys = keys
            self._current = max(current, key=lambda k: k.created_at)
            self._mtime = self._manifest.stat().st_mtime

    def _maybe_reload(self) -> None:
        """Pick up a rotation done by another process, checking at most once a second."""
        if self._settings.signing_key_file is not None:
            return
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return
        self._checked_at = now
        with contextlib.suppress(FileNotFoundError):
            if self._manifest.stat().st_mtime != self._mtime:
                self.reload()

    # -- use ------------------------------------------------------------------------
    @property
    def current(self) -> SigningKey:
        """Return the key that signs new tokens."""
        self._maybe_reload()
        assert self._current is not None
        return self._current

    def verification_key(self, kid: str) -> SigningKey | None:
        """Return the key for ``kid`` if it may still verify tokens, else ``None``."""
        self._maybe_reload()
        key = self._keys.get(kid)
        if key is None or not self._still_verifies(key):
            return None
        return key

    def _still_verifies(self, key: SigningKey) -> bool:
        if key.retired_at is None:
            return True
        return time.time() < key.retired_at + self._settings.signing_key_retention_seconds

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS: the current key and every retired key still verifying."""
        self._maybe_reload()
        keys = sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True)
        return {"keys": [k.public_jwk() for k in keys if self._still_verifies(k)]}

    def rotate(self) -> SigningKey:
        """Make a new key current and retire the others; returns the new key."""
        if self._settings.signing_key_file is not None:
            raise ValueError("keys supplied from a file are rotated by replacing the file")
        now = time.time()
        entries = json.loads(self._manifest.read_text())["keys"]
        private = Ed25519PrivateKey.generate()
        kid = _thumbprint(private.public_key())
        _write_secret_file(self._dir / f"{kid}.pem", _private_pem(private))
        horizon = now - self._settings.signing_key_retention_seconds
        kept = []
        for entry in entries:
            if entry.get("retired_at") is None:
                entry["retired_at"] = now
            if entry["retired_at"] >= horizon:
                kept.append(entry)
            else:
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / f"{entry['kid']}.pem").unlink()
        kept.append({"kid": kid, "created_at": now, "retired_at": None})
        _write_manifest(self._manifest, kept)
        self.reload()
        return self.current


def _write_manifest(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".manifest.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": entries}, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ensure_signing_key(settings: Settings) -> None:
    """Create the first signing key and manifest if the instance has none."""
    if settings.signing_key_file is not None:
        return
    keys_dir = settings.instance_path / "keys"
    manifest = keys_dir / "manifest.json"
    if manifest.exists():
        return
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    kid = _thumbprint(private.public_key())
    _write_secret_file(keys_dir / f"{kid}.pem", _private_pem(private))
    if not manifest.exists():
        _write_manifest(manifest, [{"kid": kid, "created_at": time.time(), "retired_at": None}])


class HmacKeys:
    """Purpose-bound subkeys derived from the server's HMAC secret."""

    def __init__(self, settings: Settings) -> None:
        path = settings.hmac_secret_file or settings.instance_path / "keys" / "hmac.key"
        if settings.hmac_secret_file is None and not path.exists():
            # Hex text, so no random byte is ever mistaken for trailing whitespace.
            _write_secret_file(path, secrets.token_hex(HMAC_SECRET_BYTES).encode() + b"\n")
        secret = _decode_secret(path.read_bytes())
        if len(secret) < HMAC_SECRET_BYTES:
            raise ValueError(f"the HMAC secret in {path} must hold at least 32 bytes")
        self.refresh_hash = self._derive(secret, b"latchkey/refresh-token-hash/v1")
        self.refresh_successor = self._derive(secret, b"latchkey/refresh-successor/v1")
        self.log_pseudonym = self._derive(secret, b"latchkey/log-pseudonym/v1")

    @staticmethod
    def _derive(secret: bytes, label: bytes) -> bytes:
        return hmac.new(secret, label, hashlib.sha256).digest()


def _decode_secret(data: bytes) -> bytes:
    """Return a secret file's bytes: hex text is decoded, anything else is used as is."""
    text = data.strip()
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return data


def ensure_key_material(settings: Settings) -> None:
    """Create signing key and HMAC secret before workers fork, so they never race."""
    settings.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_signing_key(settings)
    HmacKeys(settings)
