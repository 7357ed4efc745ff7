"""Mint and check every token Latchkey hands out: ids, refresh tokens and access JWTs.

Tokens are untrusted input (T3): each parser checks length, alphabet and structure before
anything touches the store, and returns typed values, never raw strings, to the caller.

Refresh tokens are opaque: ``lkr_`` + base64url(user id | session id | generation |
256-bit secret), the secret being 192 unpredictable bits and a 64-bit server MAC over
everything before it. The ids let one store script find the session in its cluster slot
without a lookup table; they are random and mean nothing. A successor is derived from its
predecessor with a server-keyed HMAC, so a retry of the previous token inside the grace
window gets the *same* successor back without the store ever holding a usable token (T4).

The MAC (``TokenService.is_authentic``, one HMAC) tells a token the server minted from
one it never did, before anything else is done with it (H2): the generation field is the
client's word, and only a minted token's may be believed. The server mints one chain per
session, so a minted token of an older generation than the session's is an ancestor,
known without recomputing anything.

Access tokens are RFC 9068 JWT access tokens (header ``typ: at+jwt``, claims ``iss`` = the
issuer URL, ``client_id``, ``exp`` never past the session's absolute end), signed with
EdDSA (Ed25519), whose algorithm the server pins. ``alg`` stays ``EdDSA`` rather than RFC
9864's ``Ed25519``: PyJWT and Authlib verify only ``EdDSA`` today (docs/OAUTH.md has the
test and what a verifier configures). Verifying an Ed25519
signature costs ~160 µs here, more than the rest of a protected request, so a verified
token's claims are cached by the exact token string: a signature result for given bytes
never changes, ``exp`` is re-checked on every hit, the signing key is asked on every hit
whether it still verifies (a withdrawn key's tokens are refused from the next request on,
cached or not), and revocation is checked in the store on every request regardless.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import jwt
from latchkey_resource.claims import (
    ACCESS_TOKEN_TYP,
    AccessClaims,
    ClaimsRejected,
    checked_kid,
    decode_claims,
    is_session_id,
    looks_like_jwt,
)

from .config import Settings
from .errors import InvalidToken, TokenExpired
from .keys import HmacKeys, KeyRing, b64url

__all__ = [
    "ACCESS_TOKEN_TYP",
    "AccessClaims",
    "RefreshToken",
    "TokenService",
    "looks_like_token",
    "new_session_id",
    "new_user_id",
    "parse_session_id",
    "session_ids_in",
    "tokens_in",
]

USER_ID_BYTES = 16  # 128 bits
SESSION_ID_BYTES = 24  # 192 bits
REFRESH_SECRET_BYTES = 32  # 256 bits: the unpredictable part, then the MAC
REFRESH_MAC_BYTES = 8  # 64 bits: a forgery must be guessed online, under the D2 budget
_REFRESH_NONCE_BYTES = REFRESH_SECRET_BYTES - REFRESH_MAC_BYTES
_MAX_GENERATION = 2**32 - 1
REFRESH_PREFIX = "lkr_"
_REFRESH_RAW_BYTES = USER_ID_BYTES + SESSION_ID_BYTES + 4 + REFRESH_SECRET_BYTES
_REFRESH_LEN = len(REFRESH_PREFIX) + (_REFRESH_RAW_BYTES * 4 + 2) // 3
_SESSION_ID_LEN = (SESSION_ID_BYTES * 4 + 2) // 3
SESSION_ID_LENGTH = _SESSION_ID_LEN
_B64URL = "[A-Za-z0-9_-]"
_REFRESH_RE = re.compile(rf"{REFRESH_PREFIX}{_B64URL}{{{_REFRESH_LEN - len(REFRESH_PREFIX)}}}")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{20,}")
# The shortest string either token pattern can match: anything shorter is not a token.
MIN_TOKEN_LENGTH = 38
# The access token's header and claims rules (RFC 9068: typ at+jwt, EdDSA pinned, iss, aud,
# client_id...) are latchkey_resource.claims's, which every resource server applies too.


def new_user_id() -> str:
    """Return a fresh opaque user id (128 bits from the CSPRNG)."""
    return b64url(secrets.token_bytes(USER_ID_BYTES))


def new_session_id() -> str:
    """Return a fresh opaque session id (192 bits from the CSPRNG)."""
    return b64url(secrets.token_bytes(SESSION_ID_BYTES))


def parse_session_id(value: Any) -> str | None:
    """Return ``value`` if it has the exact shape of a session id, else ``None``."""
    return value if is_session_id(value) else None


def looks_like_token(value: str) -> bool:
    """Say whether a string has the shape of a Latchkey access or refresh token."""
    return bool(_REFRESH_RE.fullmatch(value) or _JWT_RE.fullmatch(value))


# Where a token may start inside other text (a lookahead, so overlapping starts are all
# tried and a prefix cannot hide one): anything JWT-shaped (ours or not: none belongs in a
# URL), or a refresh token's prefix and fixed-length body.
_SIGNATURE_LEN = 86  # an Ed25519 signature, 64 bytes in base64url without padding
_TOKEN_START = re.compile(
    rf"(?=(eyJ{_B64URL}{{5,}}\.eyJ{_B64URL}{{5,}}\.{_B64URL}{{20,}}"
    rf"|{REFRESH_PREFIX}{_B64URL}{{{_REFRESH_LEN - len(REFRESH_PREFIX)}}}))")
# A session id stands alone: exactly its length of the alphabet, nothing of it either side.
_SESSION_ID_WORD = re.compile(rf"(?<!{_B64URL}){_B64URL}{{{_SESSION_ID_LEN}}}(?!{_B64URL})")


def tokens_in(text: str, limit: int) -> list[str]:
    """Return up to ``limit`` distinct access and refresh tokens found anywhere in ``text``.

    Glued to other text they are still found: every start is tried, and a JWT's
    signature is cut to an Ed25519 signature's length when longer (a refresh token has a
    fixed length), so a suffix cannot hide one either. What is returned has a token's shape;
    whether it is genuine is for the verifier to say.
    """
    found: list[str] = []
    for match in _TOKEN_START.finditer(text):
        value = match.group(1)
        if value.startswith("eyJ"):
            value = value[:value.rindex(".") + 1 + _SIGNATURE_LEN]
        if value not in found:
            found.append(value)
            if len(found) >= limit:
                break
    return found


def session_ids_in(text: str) -> list[str]:
    """Return every stand-alone run of ``text`` shaped exactly like a session id."""
    return _SESSION_ID_WORD.findall(text)


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class RefreshToken:
    """A parsed refresh token. Its ``repr`` never shows the secret."""

    user_id: str
    session_id: str
    generation: int
    _value: str

    def __repr__(self) -> str:
        return f"RefreshToken(generation={self.generation}, value=<redacted>)"

    @property
    def value(self) -> str:
        """Return the token as sent on the wire (only for the response body)."""
        return self._value

    @classmethod
    def parse(cls, value: Any) -> RefreshToken:
        """Check the shape of an untrusted refresh token; raise ``InvalidToken``."""
        if not isinstance(value, str) or not _REFRESH_RE.fullmatch(value):
            raise InvalidToken("The refresh token is malformed")
        try:
            raw = _b64decode(value[len(REFRESH_PREFIX):])
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("The refresh token is malformed") from exc
        if len(raw) != _REFRESH_RAW_BYTES:
            raise InvalidToken("The refresh token is malformed")
        uid = b64url(raw[:USER_ID_BYTES])
        sid = b64url(raw[USER_ID_BYTES:USER_ID_BYTES + SESSION_ID_BYTES])
        gen = int.from_bytes(raw[USER_ID_BYTES + SESSION_ID_BYTES:-REFRESH_SECRET_BYTES], "big")
        return cls(uid, sid, gen, value)

    @classmethod
    def build(cls, user_id: str, session_id: str, generation: int, secret: bytes) -> RefreshToken:
        """Assemble a token from its parts."""
        raw = (_b64decode(user_id) + _b64decode(session_id)
               + generation.to_bytes(4, "big") + secret[:REFRESH_SECRET_BYTES])
        return cls(user_id, session_id, generation, REFRESH_PREFIX + b64url(raw))


class _Verified(NamedTuple):
    """A cache entry: the claims a signature proved and the key that made it."""

    kid: str
    claims: AccessClaims


class TokenService:
    """Issue and verify tokens with the server's keys."""

    def __init__(self, settings: Settings, keyring: KeyRing, hmac_keys: HmacKeys) -> None:
        self._settings = settings
        self._keyring = keyring
        self._hmac = hmac_keys
        # Its own purpose-bound key, derived here so the token format owns it whole.
        self._mac_key = hmac.new(hmac_keys.refresh_hash, b"latchkey/refresh-token-mac/v1",
                                 hashlib.sha256).digest()
        self._verify_cached = lru_cache(maxsize=settings.jwt_cache_size)(self._verify_and_note_key)

    # -- refresh tokens -------------------------------------------------------------
    def new_refresh_token(self, user_id: str, session_id: str) -> RefreshToken:
        """Return the first refresh token of a session (generation 0, random secret)."""
        return self._minted(user_id, session_id, 0,
                            secrets.token_bytes(_REFRESH_NONCE_BYTES))

    def successor(self, token: RefreshToken) -> RefreshToken:
        """Return the one successor of ``token``: deterministic, unguessable without the key."""
        if token.generation >= _MAX_GENERATION:
            raise InvalidToken()  # no successor fits the format: never a minted chain
        secret = hmac.new(self._hmac.refresh_successor, token.value.encode(), hashlib.sha256)
        return self._minted(token.user_id, token.session_id, token.generation + 1,
                            secret.digest()[:_REFRESH_NONCE_BYTES])

    def is_authentic(self, token: RefreshToken) -> bool:
        """Say whether the server minted ``token``: one HMAC, before any other work (H2).

        A token made before the MAC existed (issue 13) fails this too; sessions.py says
        what it may still do.
        """
        raw = _b64decode(token.value[len(REFRESH_PREFIX):])
        return hmac.compare_digest(self._mac(raw[:-REFRESH_MAC_BYTES]),
                                   raw[-REFRESH_MAC_BYTES:])

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._mac_key, body, hashlib.sha256).digest()[:REFRESH_MAC_BYTES]

    def _minted(self, user_id: str, session_id: str, generation: int,
                nonce: bytes) -> RefreshToken:
        """Build a token whose secret ends in the MAC of everything before it."""
        body = (_b64decode(user_id) + _b64decode(session_id) + generation.to_bytes(4, "big")
                + nonce)
        return RefreshToken.build(user_id, session_id, generation, nonce + self._mac(body))

    def refresh_hash(self, token: RefreshToken) -> str:
        """Return the keyed hash the store keeps instead of the token (T4)."""
        digest = hmac.new(self._hmac.refresh_hash, token.value.encode(), hashlib.sha256).digest()
        return b64url(digest[:16])

    # -- access tokens --------------------------------------------------------------
    def access_token_lifetime(self, session_left_seconds: int) -> int:
        """Return the lifetime of an access token for a session with this much time left.

        The configured TTL, but never past the session's absolute end (R3): a service
        that verifies only the signature must not accept a token of a session that ended.
        """
        return max(0, min(self._settings.access_token_ttl_seconds, session_left_seconds))

    def issue_access_token(
        self, user_id: str, session_id: str, auth_level: str, auth_time: int, *,
        client_id: str | None = None, lifetime_seconds: int | None = None, jkt: str = "",
    ) -> str:
        """Sign an RFC 9068 access token carrying exactly the claims in API.md.

        ``lifetime_seconds`` comes from :meth:`access_token_lifetime` (default: the full
        TTL); ``client_id`` defaults to the built-in client that ``/v1`` logins belong to;
        ``jkt`` binds it to a DPoP key (``cnf.jkt``, RFC 9449 section 6.1).
        """
        now = int(time.time())
        key = self._keyring.current
        if lifetime_seconds is None:
            lifetime_seconds = self._settings.access_token_ttl_seconds
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user_id,
            "sid": session_id,
            "client_id": client_id or self._settings.default_client_id,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + lifetime_seconds,
            "auth_level": auth_level,
            "auth_time": int(auth_time),
        }
        if jkt:
            claims["cnf"] = {"jkt": jkt}
        return jwt.encode(claims, key.private_key, algorithm="EdDSA",
                          headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYP})

    def verify_access_token(self, token: Any, *, allow_expired: bool = False) -> AccessClaims:
        """Check shape, signature (cached), claims and expiry; raise a typed error.

        ``allow_expired`` accepts a genuine token past ``exp``: it still names the
        session to end (logout, a leaked token), though it authorises nothing.
        """
        if not looks_like_jwt(token):
            raise InvalidToken("The access token is malformed")
        kid, claims = self._verify_cached(token)
        # The signature stays true but its key may since have been withdrawn: ask the key
        # ring on every hit (a dict lookup behind a memory read, keys.py::KeyRing._synced).
        if self._keyring.verification_key(kid) is None:
            raise InvalidToken()
        if not allow_expired and claims.expires_at <= time.time():
            raise TokenExpired()
        return claims

    def claims_ignoring_expiry(self, token: str) -> AccessClaims:
        """Return the claims of a genuine token even past ``exp`` (to revoke a leak)."""
        return self.verify_access_token(token, allow_expired=True)

    def _verify_and_note_key(self, token: str) -> _Verified:
        """Verify one token fully and keep its ``kid`` beside the claims, for the check on
        each hit; failures raise, so only successes are cached (a flood of forged tokens
        cannot evict good entries).

        The header (EdDSA pinned, ``typ`` at+jwt) and the claims are checked by
        ``latchkey_resource.claims``, as every resource server checks them.
        """
        try:
            kid = checked_kid(token)
            key = self._keyring.verification_key(kid)
            if key is None:
                raise InvalidToken()
            claims = decode_claims(token, key.public_key, issuer=self._settings.issuer,
                                   audience=self._settings.audience)
        except ClaimsRejected as exc:
            raise InvalidToken() from exc
        return _Verified(kid, claims)
