"""Check a Latchkey access token's header and claims: the pure rules every verifier applies.

Access tokens are RFC 9068 JWTs: header ``typ: at+jwt``, ``alg`` pinned to EdDSA (Ed25519),
a ``kid`` naming a key of the JWKS; claims ``iss`` (the issuer URL), ``aud``, ``sub``,
``sid``, ``client_id``, ``jti``, ``iat``, ``exp``, ``auth_level`` and ``auth_time``. The
token server (``latchkey_server.tokens``) and every resource server (``verifier.py``) check
them here, so a token one accepts the other accepts. What a rule refuses raises
``ClaimsRejected`` (no detail: a verifier answers ``invalid_token`` and says no more), and
``exp`` is left to the caller, which answers ``token_expired`` for it.

A header naming where to fetch a key (``jku``, ``x5u``), or carrying one (``jwk``,
``x5c``), or any ``crit`` extension is refused outright: keys come only from the issuer's
JWKS, and Latchkey never issues such headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ACCESS_TOKEN_TYPS",
    "ALGORITHM",
    "AUTH_LEVELS",
    "MAX_JWT_LENGTH",
    "REQUIRED_CLAIMS",
    "AccessClaims",
    "ClaimsRejected",
    "checked_kid",
    "decode_claims",
    "is_session_id",
    "is_user_id",
    "looks_like_jwt",
]

ALGORITHM = "EdDSA"
MAX_JWT_LENGTH = 2048
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{20,}")
_B64URL = "[A-Za-z0-9_-]"
_USER_ID_LEN = (16 * 4 + 2) // 3  # 128 bits in base64url
_SESSION_ID_LEN = (24 * 4 + 2) // 3  # 192 bits
_USER_ID_RE = re.compile(rf"{_B64URL}{{{_USER_ID_LEN}}}")
_SESSION_ID_RE = re.compile(rf"{_B64URL}{{{_SESSION_ID_LEN}}}")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "client_id", "jti", "iat", "exp", "auth_level",
                   "auth_time")
# RFC 9068 section 2.1: the media type of a JWT access token, which verifiers must check
# (section 4) so that no other JWT of ours (or an ID token) is taken for one.
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
ACCESS_TOKEN_TYPS = frozenset({ACCESS_TOKEN_TYP, "application/at+jwt"})
AUTH_LEVELS = ("normal", "elevated")
# Headers that name or carry a key, or demand extensions: never honoured, always refused.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})


class ClaimsRejected(Exception):
    """The token is not a valid Latchkey access token (which rule, the verifier keeps)."""


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token that a verifier acts on."""

    user_id: str
    session_id: str
    auth_level: str
    auth_time: int
    expires_at: int
    jti: str
    client_id: str
    issued_at: int
    jkt: str = ""  # cnf.jkt (RFC 9449 section 6.1): the DPoP key it is bound to, or ''


def looks_like_jwt(token: Any) -> bool:
    """Say whether ``token`` has the shape and size of a Latchkey JWT (before any parsing)."""
    return (isinstance(token, str) and len(token) <= MAX_JWT_LENGTH
            and _JWT_RE.fullmatch(token) is not None)


def is_user_id(value: Any) -> bool:
    """Say whether ``value`` has the exact shape of a user id."""
    return isinstance(value, str) and _USER_ID_RE.fullmatch(value) is not None


def is_session_id(value: Any) -> bool:
    """Say whether ``value`` has the exact shape of a session id."""
    return isinstance(value, str) and _SESSION_ID_RE.fullmatch(value) is not None


def checked_kid(token: str) -> str:
    """Return the ``kid`` of a token whose header is one Latchkey issues, else refuse it.

    The algorithm is pinned (the header must say EdDSA and only EdDSA is accepted) and the
    type is checked (RFC 9068 section 4): only an access token is one.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ClaimsRejected from exc
    kid = header.get("kid")
    if (header.get("alg") != ALGORITHM or not isinstance(kid, str) or not kid
            or header.get("typ") not in ACCESS_TOKEN_TYPS
            or not _FORBIDDEN_HEADERS.isdisjoint(header)):
        raise ClaimsRejected
    return kid


def decode_claims(token: str, key: Ed25519PublicKey, *, issuer: str,
                  audience: str) -> AccessClaims:
    """Verify the signature with ``key`` and check every claim but ``exp``'s time.

    ``exp`` must be present and an integer; whether it has passed is the caller's check,
    since a verifier may cache this result and must compare ``exp`` on every use.
    """
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience,
                            issuer=issuer,
                            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False})
    except jwt.PyJWTError as exc:
        raise ClaimsRejected from exc
    if (not is_user_id(claims["sub"]) or not is_session_id(claims["sid"])
            or claims["auth_level"] not in AUTH_LEVELS
            or not isinstance(claims["client_id"], str)
            or not all(isinstance(claims[name], int) and not isinstance(claims[name], bool)
                       for name in ("exp", "iat", "auth_time"))):
        raise ClaimsRejected
    cnf = claims.get("cnf", {})
    jkt = cnf.get("jkt", "") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or len(jkt) > 43:  # a base64url SHA-256 (RFC 7638)
        raise ClaimsRejected
    return AccessClaims(claims["sub"], claims["sid"], claims["auth_level"],
                        claims["auth_time"], claims["exp"], str(claims["jti"]),
                        claims["client_id"], claims["iat"], jkt)
