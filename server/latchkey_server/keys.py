"""Own the server's key material: Ed25519 signing keys and the HMAC secret.

Both are generated from the OS CSPRNG on first start into ``<instance>/keys`` with mode
0600, or read from files an operator supplies. Signing keys live in a small keyring so that
rotation never logs anyone out: the current key signs, retired keys keep verifying (and
stay in the JWKS) until every token they signed has expired, and the next key is in the
JWKS before it signs, so a verifier with a cached JWKS never meets an unknown ``kid``. A
withdrawn (compromised) key verifies nothing from the next request on, in every worker.
The ``kid`` is the RFC 7638 JWK thumbprint, so it is stable, public and says nothing about
the server.

The single HMAC secret is never used directly; purpose-specific subkeys are derived from it
(refresh-token hashing, successor derivation, log pseudonyms) so one use cannot be turned
into another.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .config import Settings

__all__ = [
    "JWKS_MAX_AGE_SECONDS",
    "HmacKeys",
    "KeyRing",
    "KeyStatus",
    "SigningKey",
    "Withdrawal",
    "b64url",
    "ensure_key_material",
]

HMAC_SECRET_BYTES = 32
# How long verifiers may cache the JWKS (its Cache-Control). A next key published this long
# before it signs is known to every verifier that honours the header.
JWKS_MAX_AGE_SECONDS = 300


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


class KeyStatus(StrEnum):
    """Where a signing key is in its life: published, signing, verifying, or dead."""

    NEXT = "next"  # in the JWKS, not signing yet: verifiers learn it before they meet it
    CURRENT = "current"  # signs new tokens
    RETIRED = "retired"  # verifies what it signed until those tokens have expired
    WITHDRAWN = "withdrawn"  # compromised or unwanted: verifies nothing, out of the JWKS


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key pair with its thumbprint ``kid``, status and life-cycle times."""

    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    created_at: float
    retired_at: float | None = None
    status: KeyStatus = KeyStatus.CURRENT

    def public_jwk(self) -> dict[str, Any]:
        """Return the public key as a JWK (RFC 8037 OKP)."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.kid,
                "alg": "EdDSA", "use": "sig"}


@dataclass(frozen=True)
class Withdrawal:
    """What ``KeyRing.withdraw`` did: the key it withdrew and the keys that now serve."""

    kid: str
    already_withdrawn: bool
    promoted: bool  # the withdrawn key was signing: the next key signs now
    current: SigningKey
    next: SigningKey | None


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


# -- the key directory: manifest, lock, generation stamp --------------------------------
# ``manifest.json`` is the truth (each key's status and times); ``<kid>.pem`` the private
# keys; ``.lock`` serialises writers (exclusive) against reloading readers (shared);
# ``generation`` is an 8-byte counter every write of the manifest bumps. Each worker maps
# the counter into memory and compares it on every use of the ring: no system call on the
# hot path, and a change is seen by the very next request of every worker on the host.

_MANIFEST = "manifest.json"
_LOCK = ".lock"
_GENERATION = "generation"
_GENERATION_BYTES = 8


@contextlib.contextmanager
def _locked(keys_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the key directory's lock: writers exclusively, a reloading reader shared.

    A reader loading the manifest while a withdrawal deletes a private key would find a
    listed key without its file; two ``keys`` commands at once would lose one's edit. A
    reader on a read-only key directory (a volume another host writes) goes without the
    lock; ``KeyRing.reload`` retries the one race that leaves.
    """
    fd: int | None = None
    try:
        fd = os.open(keys_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        if exclusive:
            raise
        with contextlib.suppress(OSError):
            fd = os.open(keys_dir / _LOCK, os.O_RDONLY)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _status_of(entry: dict[str, Any]) -> KeyStatus:
    """Return an entry's status; manifests written before statuses existed have none."""
    if "status" in entry:
        return KeyStatus(entry["status"])
    return KeyStatus.CURRENT if entry.get("retired_at") is None else KeyStatus.RETIRED


def _read_entries(manifest: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(manifest.read_text())["keys"]
    for entry in entries:
        entry["status"] = _status_of(entry).value
    return entries


def _write_manifest(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".manifest.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": entries}, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _ensure_generation_file(keys_dir: Path) -> None:
    fd = os.open(keys_dir / _GENERATION, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < _GENERATION_BYTES:
            os.pwrite(fd, bytes(_GENERATION_BYTES), 0)
    finally:
        os.close(fd)


def _bump_generation(keys_dir: Path) -> None:
    """Tell every worker the manifest changed (in place: their maps must stay valid)."""
    fd = os.open(keys_dir / _GENERATION, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        value = int.from_bytes(os.pread(fd, _GENERATION_BYTES, 0).ljust(_GENERATION_BYTES,
                                                                          b"\0"), "little")
        os.pwrite(fd, ((value + 1) % 2**64).to_bytes(_GENERATION_BYTES, "little"), 0)
    finally:
        os.close(fd)


def _map_generation(keys_dir: Path) -> mmap.mmap | None:
    try:
        fd = os.open(keys_dir / _GENERATION, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size < _GENERATION_BYTES:
            return None
        return mmap.mmap(fd, _GENERATION_BYTES, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def _commit(keys_dir: Path, entries: list[dict[str, Any]]) -> None:
    """Write the manifest, then bump the generation: a worker that sees the new
    generation reads the new manifest. Call with the exclusive lock held."""
    _write_manifest(keys_dir / _MANIFEST, entries)
    _bump_generation(keys_dir)


def _new_key_entry(keys_dir: Path, status: KeyStatus, now: float) -> dict[str, Any]:
    """Generate a key pair, write its private half 0600, and return its manifest entry."""
    private = Ed25519PrivateKey.generate()
    kid = _thumbprint(private.public_key())
    _write_secret_file(keys_dir / f"{kid}.pem", _private_pem(private))
    return {"kid": kid, "status": status.value, "created_at": now, "retired_at": None}


def _with_status(entries: list[dict[str, Any]], status: KeyStatus) -> list[dict[str, Any]]:
    return [e for e in entries if e["status"] == status.value]


@dataclass(frozen=True)
class _Ring:
    """One consistent view of the manifest, replaced whole so readers need no lock."""

    keys: dict[str, SigningKey]  # every key that is not withdrawn
    current: SigningKey
    next: SigningKey | None
    generation: int
    mtime_ns: int


class KeyRing:
    """The signing keys: one current, one next, older ones verifying until their tokens expire.

    The manifest (``keys/manifest.json``) records each key's status and times. The *next*
    key is in the JWKS from the moment it is made, so a verifier that cached the JWKS knows
    a key before the first token it signs (``keys rotate`` promotes it). A *withdrawn* key
    verifies nothing from the next request on, in every worker: each use of the ring
    compares a memory-mapped generation counter that every manifest write bumps (measured
    in docs/OPERATIONS.md), with a once-a-second look at the manifest's modification time
    behind it for a writer that did not bump (an older version, a hand edit).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.instance_path / "keys"
        self._manifest = self._dir / _MANIFEST
        self._from_file = settings.signing_key_file is not None
        self._lock = threading.Lock()
        self._checked_at: float = 0.0
        self._generation_map: mmap.mmap | None = None
        if settings.signing_key_file is not None:
            private = _load_private_pem(settings.signing_key_file)
            key = SigningKey(_thumbprint(private.public_key()), private, private.public_key(),
                             created_at=0.0)
            self._ring = _Ring({key.kid: key}, key, None, 0, 0)
            return
        ensure_signing_key(settings)
        self._generation_map = _map_generation(self._dir)
        self._ring = self._load()

    # -- loading --------------------------------------------------------------------
    def _generation_now(self) -> int:
        assert self._generation_map is not None
        return int.from_bytes(self._generation_map[:_GENERATION_BYTES], "little")

    def _load(self) -> _Ring:
        # The generation is read before the manifest: a write in between makes the next
        # check reload once more, never miss a change.
        generation = self._generation_now() if self._generation_map is not None else 0
        with _locked(self._dir, exclusive=False), open(self._manifest, "rb") as fh:
            mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
            entries = json.loads(fh.read())["keys"]
            keys: dict[str, SigningKey] = {}
            for entry in entries:
                status = _status_of(entry)
                if status is KeyStatus.WITHDRAWN:
                    continue  # its private key is deleted; it must not verify anything
                private = _load_private_pem(self._dir / f"{entry['kid']}.pem")
                keys[entry["kid"]] = SigningKey(
                    entry["kid"], private, private.public_key(), entry["created_at"],
                    entry.get("retired_at"), status,
                )
        current = [k for k in keys.values() if k.status is KeyStatus.CURRENT]
        if not current:
            raise ValueError("the key manifest has no current signing key")
        upcoming = [k for k in keys.values() if k.status is KeyStatus.NEXT]
        return _Ring(keys, max(current, key=lambda k: k.created_at),
                     max(upcoming, key=lambda k: k.created_at) if upcoming else None,
                     generation, mtime_ns)

    def reload(self) -> None:
        """Read the keys from disk again (a key file supplied by the operator never changes)."""
        if self._from_file:
            return
        with self._lock:
            for attempt in range(3):
                try:
                    self._ring = self._load()
                    return
                except FileNotFoundError:
                    # A private key deleted between reading the manifest and its file
                    # (only possible without the lock): the manifest has changed again.
                    if attempt == 2:
                        raise

    def _synced(self) -> _Ring:
        """Return the ring, reloaded first if another process changed the manifest."""
        ring = self._ring
        if self._from_file:
            return ring
        if self._generation_map is not None and self._generation_now() != ring.generation:
            self.reload()
            return self._ring
        now = time.monotonic()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            with contextlib.suppress(FileNotFoundError):
                if self._manifest.stat().st_mtime_ns != ring.mtime_ns:
                    self.reload()
        return self._ring

    # -- use ------------------------------------------------------------------------
    @property
    def current(self) -> SigningKey:
        """Return the key that signs new tokens."""
        return self._synced().current

    @property
    def next(self) -> SigningKey | None:
        """Return the published key the next rotation will promote, if there is one."""
        return self._synced().next

    def verification_key(self, kid: str) -> SigningKey | None:
        """Return the key for ``kid`` if it may still verify tokens, else ``None``.

        The next key verifies too: a worker that has promoted it may sign a moment before
        another worker has looked at the manifest.
        """
        key = self._synced().keys.get(kid)
        if key is None or not self._still_verifies(key):
            return None
        return key

    def _still_verifies(self, key: SigningKey) -> bool:
        if key.status is not KeyStatus.RETIRED:
            return True
        assert key.retired_at is not None
        return time.time() < key.retired_at + self._settings.signing_key_retention_seconds

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS: the current key, the next, and retired keys still verifying."""
        order = {KeyStatus.CURRENT: 0, KeyStatus.NEXT: 1, KeyStatus.RETIRED: 2}
        keys = sorted((k for k in self._synced().keys.values() if self._still_verifies(k)),
                      key=lambda k: (order[k.status], -k.created_at))
        return {"keys": [k.public_jwk() for k in keys]}

    def listing(self) -> list[dict[str, Any]]:
        """Return every key the manifest records, withdrawn ones included, for operators."""
        if self._from_file:
            key = self._ring.current
            return [{"kid": key.kid, "status": key.status.value, "created_at": None,
                     "retired_at": None, "source": "SIGNING_KEY_FILE"}]
        with _locked(self._dir, exclusive=False):
            return _read_entries(self._manifest)

    # -- change (the operator's commands) ---------------------------------------------
    def rotate(self) -> SigningKey:
        """Promote the next key to current, retire the current one, publish a new next.

        Returns the key that signs now. Retired keys past retention are dropped.
        """
        if self._from_file:
            raise ValueError("keys supplied from a file are rotated by replacing the file")
        with _locked(self._dir, exclusive=True):
            now = time.time()
            entries = _read_entries(self._manifest)
            for entry in _with_status(entries, KeyStatus.CURRENT):
                entry["status"], entry["retired_at"] = KeyStatus.RETIRED.value, now
            upcoming = _with_status(entries, KeyStatus.NEXT)
            if upcoming:
                max(upcoming, key=lambda e: e["created_at"])["status"] = KeyStatus.CURRENT.value
            else:  # a manifest from before next keys: nothing published to promote
                entries.append(_new_key_entry(self._dir, KeyStatus.CURRENT, now))
            entries.append(_new_key_entry(self._dir, KeyStatus.NEXT, now))
            _commit(self._dir, self._pruned(entries, now))
        self.reload()
        return self.current

    def withdraw(self, kid: str) -> Withdrawal:
        """Withdraw a key at once: out of the JWKS, every token it signed refused.

        A withdrawn current key is replaced by the next one (already published, so
        verifiers know it); a withdrawn current or next key is followed by a new next key,
        so one is always published ahead. The private key file is deleted: withdrawal is
        final. Refuses to withdraw the current key when there is no next key to promote.
        """
        if self._from_file:
            raise ValueError("keys supplied from a file are withdrawn by replacing the file")
        with _locked(self._dir, exclusive=True):
            now = time.time()
            entries = _read_entries(self._manifest)
            entry = next((e for e in entries if e["kid"] == kid), None)
            if entry is None:
                raise ValueError("no signing key has that kid")
            status = KeyStatus(entry["status"])
            already = status is KeyStatus.WITHDRAWN
            promoted = status is KeyStatus.CURRENT
            if promoted:
                upcoming = _with_status(entries, KeyStatus.NEXT)
                if not upcoming:
                    raise ValueError("that is the only signing key and no next key is "
                                     "published to replace it: run `keys rotate` first")
                max(upcoming, key=lambda e: e["created_at"])["status"] = KeyStatus.CURRENT.value
            if not already:
                entry["status"], entry["withdrawn_at"] = KeyStatus.WITHDRAWN.value, now
                if status in (KeyStatus.CURRENT, KeyStatus.NEXT):
                    entries.append(_new_key_entry(self._dir, KeyStatus.NEXT, now))
                _commit(self._dir, self._pruned(entries, now))
            # After the commit: a worker reloading in between must still find the file.
            with contextlib.suppress(FileNotFoundError):
                (self._dir / f"{kid}.pem").unlink()
        self.reload()
        ring = self._synced()
        return Withdrawal(kid, already, promoted, ring.current, ring.next)

    def _pruned(self, entries: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Drop retired keys whose tokens have all expired, and old withdrawal records."""
        horizon = now - self._settings.signing_key_retention_seconds
        kept = []
        for entry in entries:
            status = KeyStatus(entry["status"])
            ended_at = (entry.get("retired_at") if status is KeyStatus.RETIRED
                        else entry.get("withdrawn_at") if status is KeyStatus.WITHDRAWN
                        else None)
            if ended_at is None or ended_at >= horizon:
                kept.append(entry)
            else:
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / f"{entry['kid']}.pem").unlink()
        return kept


def ensure_signing_key(settings: Settings) -> None:
    """Create the current and next signing keys if the instance lacks them.

    An instance made before next keys existed gets its next key here, at the first start.
    """
    if settings.signing_key_file is not None:
        return
    keys_dir = settings.instance_path / "keys"
    manifest = keys_dir / _MANIFEST
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        # The common case, and the only one a read-only key directory allows: nothing to do.
        if (_with_status(_read_entries(manifest), KeyStatus.NEXT)
                and (keys_dir / _GENERATION).stat().st_size >= _GENERATION_BYTES):
            return
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(keys_dir, exclusive=True):
        _ensure_generation_file(keys_dir)
        now = time.time()
        entries = _read_entries(manifest) if manifest.exists() else []
        added = []
        if not entries:
            added.append(_new_key_entry(keys_dir, KeyStatus.CURRENT, now))
        if not _with_status(entries, KeyStatus.NEXT):
            added.append(_new_key_entry(keys_dir, KeyStatus.NEXT, now))
        if added:
            _commit(keys_dir, entries + added)


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
        self.client_secret_hash = self._derive(secret, b"latchkey/client-secret-hash/v1")
        self.dpop_nonce = self._derive(secret, b"latchkey/dpop-nonce/v1")

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
