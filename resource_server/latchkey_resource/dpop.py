"""Check DPoP proofs (RFC 9449): pure, framework-free, shared by the token server and every
resource server, so a proof the one accepts the other accepts too.

The caller hands in what the request said (its ``DPoP`` header values, method, the public
URL it was sent to, the access token for a resource) and the server's clock; this module
answers a :class:`Proof` (the key's RFC 7638 thumbprint, the ``jti`` to remember) or raises
:class:`DPoPError` carrying the RFC's error code. Remembering the ``jti`` is the store's job
(one Lua helper, run inside the script each request already runs: no extra round trip);
nonces are derived statelessly from a server secret and the clock (:class:`NonceSource`),
so every worker agrees without asking the store.

Hostile proofs (huge, malformed, wrong types, duplicate JSON members, bad base64) are a
clean ``DPoPError``, never another exception: the checks below run in RFC 9449 section 4.3's
order on bounded input, and the signature is PyJWT's (over ``cryptography``), never ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import Algorithm

__all__ = [
    "DPOP_ALGORITHMS",
    "DPOP_JWT_TYP",
    "INVALID_DPOP_PROOF",
    "MAX_JTI_LENGTH",
    "MAX_PROOF_LENGTH",
    "USE_DPOP_NONCE",
    "DPoPError",
    "NonceSource",
    "Proof",
    "access_token_hash",
    "jwk_thumbprint",
    "normalise_htu",
    "verify_proof",
]

DPOP_JWT_TYP = "dpop+jwt"
# Asymmetric only, and only what every supported platform key store can hold: P-256 (the
# Android Keystore, the Secure Enclave) and Ed25519. Never "none", never an HMAC.
DPOP_ALGORITHMS = ("ES256", "EdDSA")
INVALID_DPOP_PROOF = "invalid_dpop_proof"
USE_DPOP_NONCE = "use_dpop_nonce"
# A P-256 proof with an ath and a nonce is ~600 characters; 4 KiB leaves room for kid and
# other harmless header members without letting a proof cost more than a bounded parse.
MAX_PROOF_LENGTH = 4096
MAX_JTI_LENGTH = 128  # the store remembers each one for the iat window: keep them short
_MAX_NONCE_LENGTH = 256
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_MAX_MEMBER_LENGTH = 64  # a P-256 or Ed25519 coordinate is 43 characters; crv, kty shorter
# Members of a JWK that belong to a private (or symmetric) key: RFC 7518 sections 6.2.2,
# 6.3.2, 6.4, RFC 8037 section 2.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# The key each algorithm needs, and the members of its RFC 7638 thumbprint (sorted).
_KEY_SHAPES: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    # alg: (kty, crv, thumbprint members, coordinate length in bytes)
    "ES256": ("EC", "P-256", ("crv", "kty", "x", "y"), 32),
    "EdDSA": ("OKP", "Ed25519", ("crv", "kty", "x"), 32),
}
_ALGORITHM_OBJECTS: dict[str, Algorithm] = {
    name: jwt.get_algorithm_by_name(name) for name in DPOP_ALGORITHMS}


class DPoPError(Exception):
    """A proof refused: ``error`` is RFC 9449's code (``invalid_dpop_proof`` or
    ``use_dpop_nonce``), ``description`` a safe sentence for the client."""

    def __init__(self, description: str, *, error: str = INVALID_DPOP_PROOF) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that passed every check: who signed it and what to remember of it."""

    jkt: str  # RFC 7638 thumbprint of the proof's public key (base64url SHA-256)
    jti: str  # to be accepted once within the iat window (the store remembers it)
    iat: int  # seconds, the client's clock (within the window of the server's)
    alg: str


def _b64decode(text: str) -> bytes:
    """Decode unpadded base64url strictly (RFC 7515 section 2); raise ``DPoPError``."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise DPoPError("The DPoP proof is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise DPoPError("The DPoP proof is not base64url") from exc


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse a JSON object that names a member twice (RFC 7515 section 5.2, step 4)."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise DPoPError("The DPoP proof repeats a member")
        obj[name] = value
    return obj


def _json_object(segment: str) -> dict[str, Any]:
    """Decode one JWT segment as a JSON object with unique members; raise ``DPoPError``."""
    raw = _b64decode(segment)
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, DPoPError):
            raise
        raise DPoPError("The DPoP proof is not a JSON object") from exc
    if not isinstance(value, dict):
        raise DPoPError("The DPoP proof is not a JSON object")
    return value


def _refuse_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which JSON does not have (RFC 8259 section 6)."""
    raise DPoPError("The DPoP proof is not valid JSON")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 thumbprint (SHA-256, base64url) of an EC, OKP or RSA public JWK.

    Section 3.2: only the required members, in lexicographic order, no whitespace; RSA is
    here only so the RFC's own example (section 3.1) can be checked, not for proofs.
    """
    kty = jwk.get("kty")
    members = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
               "RSA": ("e", "kty", "n")}.get(kty if isinstance(kty, str) else "")
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise DPoPError("The DPoP key is not a supported public JWK")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"),
                           sort_keys=True, ensure_ascii=False)
    return _b64encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """Return ``ath``: base64url(SHA-256(the access token's ASCII)) (RFC 9449 section 4.2)."""
    return _b64encode(hashlib.sha256(access_token.encode("ascii")).digest())


_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=1024)
def normalise_htu(url: str) -> str:
    """Return ``url`` as proofs are compared (RFC 9449 section 4.3, step 9; RFC 3986 6.2.2,
    6.2.3): scheme and host lower-cased, a default port dropped, an empty path as ``/``,
    no query or fragment. Raise ``DPoPError`` for anything not an absolute http(s) URL."""
    if not isinstance(url, str) or len(url) > 2048 or not url.isascii():
        raise DPoPError("The DPoP proof's htu is not a URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DPoPError("The DPoP proof's htu is not a URL") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        raise DPoPError("The DPoP proof's htu is not an http(s) URL")
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _public_key(alg: str, jwk: Any) -> tuple[Any, str]:
    """Section 4.3 step 7 and the key's validity: return (key object, thumbprint)."""
    if not isinstance(jwk, dict):
        raise DPoPError("The DPoP proof's jwk header is not a JWK")
    # Step 7: the jwk header must not contain a private key.
    if _PRIVATE_MEMBERS & jwk.keys():
        raise DPoPError("The DPoP proof's jwk holds a private key")
    kty, crv, members, _ = _KEY_SHAPES[alg]
    if jwk.get("kty") != kty or jwk.get("crv") != crv:
        raise DPoPError(f"{alg} proofs need a {kty} {crv} key")
    values = tuple(jwk.get(name) for name in members)
    if not all(isinstance(value, str) and len(value) <= _MAX_MEMBER_LENGTH
               for value in values):
        raise DPoPError("The DPoP proof's jwk is incomplete")
    return _load_key(alg, values)


@lru_cache(maxsize=4096)
def _load_key(alg: str, values: tuple[str, ...]) -> tuple[Any, str]:
    """Build the key object and thumbprint of one public key, once per key.

    A device signs every proof with the same key, so the ~70 us PyJWT takes to build a P-256
    key from its JWK (the curve check included), and the thumbprint's hash, are paid once
    per key and process, not per request. Failures are not cached (they raise).
    """
    _, _, members, size = _KEY_SHAPES[alg]
    jwk = dict(zip(members, values, strict=True))
    for name in ("x", "y"):
        if name in jwk and len(_b64decode(jwk[name])) != size:
            raise DPoPError("The DPoP proof's jwk has a coordinate of the wrong size")
    try:
        # PyJWT checks the point is on the curve (cryptography refuses one that is not).
        key = _ALGORITHM_OBJECTS[alg].from_jwk(jwk)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise DPoPError("The DPoP proof's jwk is not a valid key") from exc
    return key, jwk_thumbprint(jwk)


def _number(value: Any) -> TypeGuard[int | float]:
    """Say whether a claim is a JSON number a clock can be (no bool, no 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 2**53 if isinstance(value, int) else math.isfinite(value)


def verify_proof(
    headers: Sequence[str],
    *,
    method: str,
    url: str,
    now: float,
    iat_window_seconds: int,
    access_token: str | None = None,
    nonce_valid: Callable[[str], bool] | None = None,
) -> Proof:
    """Check one request's DPoP proof by RFC 9449 section 4.3; return it or raise why not.

    ``headers`` are every value of the request's ``DPoP`` header; ``url`` the public URL
    the request was sent to (from the configured issuer, never the request's own Host);
    ``access_token`` the token of a resource request (then ``ath`` must match it);
    ``nonce_valid`` says whether a ``nonce`` is one the server handed out (``None``: nonces
    are off). A missing or bad nonce is ``use_dpop_nonce``; everything else
    ``invalid_dpop_proof``. The ``jti`` is not remembered here: the caller's store does it.
    """
    # Step 1: exactly one DPoP HTTP request header field.
    if len(headers) != 1:
        raise DPoPError("Send exactly one DPoP header" if headers else "A DPoP proof is needed")
    value = headers[0].strip()
    # Step 2: the value is a single well-formed JWT (compact JWS, three segments).
    if len(value) > MAX_PROOF_LENGTH:
        raise DPoPError("The DPoP proof is too long")
    segments = value.split(".")
    if len(segments) != 3 or not all(segments):
        raise DPoPError("The DPoP proof is not a JWT")
    header, claims = _json_object(segments[0]), _json_object(segments[1])
    signature = _b64decode(segments[2])
    # Step 3: every claim section 4.2 requires, with its type.
    jti, htm, htu, iat = (claims.get(name) for name in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise DPoPError(f"The DPoP proof needs a jti of 1-{MAX_JTI_LENGTH} characters")
    if not isinstance(htm, str) or not isinstance(htu, str) or not _number(iat):
        raise DPoPError("The DPoP proof needs htm, htu and iat claims")
    # Step 4: typ is dpop+jwt.
    if header.get("typ") != DPOP_JWT_TYP:
        raise DPoPError("The DPoP proof's typ must be dpop+jwt")
    # Step 5: alg is an asymmetric algorithm this server supports (never none or HS*).
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _KEY_SHAPES:
        raise DPoPError(f"The DPoP proof's alg must be one of {', '.join(DPOP_ALGORITHMS)}")
    # Step 7 (before 6, which needs the key): a public key only, and a valid one.
    key, jkt = _public_key(alg, header.get("jwk"))
    # Step 6: the signature verifies with that key.
    signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
    try:
        verified = _ALGORITHM_OBJECTS[alg].verify(signing_input, key, signature)
    except (ValueError, TypeError):
        verified = False
    if not verified:
        raise DPoPError("The DPoP proof's signature does not verify")
    # Step 8: htm matches the request's method.
    if htm != method.upper():
        raise DPoPError("The DPoP proof's htm does not match the request")
    # Step 9: htu matches the request's URL, without query and fragment.
    if normalise_htu(htu) != normalise_htu(url):
        raise DPoPError("The DPoP proof's htu does not match the request")
    # Step 10: the nonce, when the server hands them out.
    if nonce_valid is not None:
        nonce = claims.get("nonce")
        if (not isinstance(nonce, str) or len(nonce) > _MAX_NONCE_LENGTH
                or not nonce_valid(nonce)):
            raise DPoPError("Use the server's DPoP nonce", error=USE_DPOP_NONCE)
    # Step 11: created within the window around the server's clock (section 11.1).
    if abs(now - float(iat)) > iat_window_seconds:
        raise DPoPError("The DPoP proof's iat is outside the accepted window")
    # Step 12: for a resource, ath is the hash of the access token presented with it
    # (the caller compares jkt with the token's cnf.jkt).
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode("ascii", "replace"), access_token_hash(access_token).encode()):
            raise DPoPError("The DPoP proof's ath does not match the access token")
    return Proof(jkt=jkt, jti=jti, iat=int(iat), alg=alg)


class NonceSource:
    """Issue and check server nonces (RFC 9449 section 8) with no state: a nonce is the
    current time step and an HMAC of it under a server secret, so any worker can check
    any other's, and it rotates every ``period_seconds`` (the previous step's nonce stays
    good, so a client is never caught at the edge of a step)."""

    def __init__(self, secret: bytes, *, period_seconds: int = 300) -> None:
        self._key = hmac.new(secret, b"latchkey/dpop-nonce/v1", hashlib.sha256).digest()
        self._period = period_seconds

    def _for_step(self, step: int) -> str:
        body = step.to_bytes(8, "big")
        return _b64encode(body + hmac.new(self._key, body, hashlib.sha256).digest()[:16])

    def current(self, now: float) -> str:
        """Return the nonce to hand out at ``now``."""
        return self._for_step(int(now // self._period))

    def is_valid(self, nonce: str, now: float) -> bool:
        """Say whether ``nonce`` is this step's or the previous one's."""
        step = int(now // self._period)
        return any(hmac.compare_digest(nonce, self._for_step(s)) for s in (step, step - 1))
