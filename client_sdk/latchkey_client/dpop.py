"""Build RFC 9449 DPoP proofs: the JWT that shows this installation holds the session's key.

A proof is a compact JWS whose header carries ``typ: dpop+jwt``, the algorithm and the
*public* key (``jwk``), and whose claims name this one request: a random ``jti``, ``htm``
(the method), ``htu`` (the URL without query or fragment), ``iat`` (server time, seconds),
``ath`` (the access token's SHA-256, on resource requests) and ``nonce`` (the last one the
server sent). The signature comes from a :class:`Signer`, whatever holds the key: the
Android Keystore, the iOS Keychain, or a software key kept like the refresh token
(``dpop_keys.py``). The encoding here is plain JSON and base64url, no dependency: the SDK
stays httpx-only and a platform key store never hands its private key to Python.

:class:`ProofState` is what the SDK remembers between proofs (I/O-free): the nonce each
origin sent last (``DPoP-Nonce``) and the offset of the server's clock from the device's,
read from the ``Date`` header, so a phone whose clock is minutes off still sends an ``iat``
inside the server's window.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import httpx

__all__ = [
    "DPOP_ERRORS",
    "PROOF_TYP",
    "ProofState",
    "Signer",
    "access_token_hash",
    "b64url",
    "build_proof",
    "dpop_error",
    "htu_of",
    "jwk_thumbprint",
]

PROOF_TYP = "dpop+jwt"
#: Members of each key type's public JWK, in the order RFC 7638 s3.2 hashes them.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
                       "RSA": ("e", "kty", "n")}
#: A skew below this is the ``Date`` header's one-second resolution plus latency: ignored.
_SKEW_NOISE_SECONDS = 2.0
#: The two error codes RFC 9449 adds (s7.1, s8, s9); they mean DPoP wherever they appear.
DPOP_ERRORS = ("use_dpop_nonce", "invalid_dpop_proof")


@runtime_checkable
class Signer(Protocol):
    """A key that signs proofs and never shows its private half.

    ``alg`` is the JWS algorithm (``ES256`` or ``EdDSA``); ``sign`` returns the JWS
    signature of ``data`` (for ES256 the 64-byte ``r || s``, RFC 7518 s3.4, not DER);
    ``public_jwk`` the public key as a JWK with only its public members.
    """

    @property
    def alg(self) -> str:
        """The JWS ``alg`` of this key."""

    def sign(self, data: bytes) -> bytes:
        """Return the JWS signature over ``data``."""

    def public_jwk(self) -> dict[str, str]:
        """Return the public key as a JWK (``kty``, ``crv``, ``x`` and for EC ``y``)."""


def b64url(data: bytes) -> str:
    """Return ``data`` base64url-encoded without padding (RFC 7515 s2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode("utf-8")


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public JWK, base64url (the ``jkt``).

    Only the required members, in lexicographic order, without whitespace (s3.2-3.3).
    """
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise ValueError(f"unsupported key type {jwk.get('kty')!r}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"),
                           sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """Return the ``ath`` claim: base64url SHA-256 of the access token's ASCII (s4.2)."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def htu_of(url: httpx.URL) -> str:
    """Return the ``htu`` of a request URL: without query and fragment (RFC 9449 s4.2).

    Built from the URL's parts as httpx sends them (``raw_path`` is the path as sent, then
    the query, never the fragment), not by re-parsing: a proof per request should cost a
    signature, not a URL parse.
    """
    path = url.raw_path.split(b"?", 1)[0].decode("ascii")
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


def build_proof(
    signer: Signer,
    *,
    method: str,
    url: httpx.URL,
    issued_at: int,
    access_token: str | None = None,
    nonce: str | None = None,
    jti: str | None = None,
) -> str:
    """Return one DPoP proof JWT for ``method url``, signed by ``signer``.

    ``issued_at`` is the server's time in whole seconds (:meth:`ProofState.now`);
    ``access_token`` adds ``ath``; ``nonce`` the server's last ``DPoP-Nonce``; ``jti`` is
    128 random bits unless given (tests pin it).
    """
    header = {"typ": PROOF_TYP, "alg": signer.alg, "jwk": signer.public_jwk()}
    claims: dict[str, object] = {
        "jti": jti or secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": htu_of(url),
        "iat": issued_at,
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = f"{b64url(_compact_json(header))}.{b64url(_compact_json(claims))}"
    signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def dpop_error(response: httpx.Response) -> str | None:
    """Return the DPoP error a refusal names: ``use_dpop_nonce`` or ``invalid_dpop_proof``.

    The server says it three ways (API.md "DPoP"): the problem+json ``code`` on ``/v1``,
    the RFC 6749 ``error`` on ``/oauth``, ``WWW-Authenticate: DPoP error=...`` from a
    resource. The body must have been read.
    """
    if response.status_code not in (400, 401):
        return None
    challenge = response.headers.get("WWW-Authenticate", "")
    for code in DPOP_ERRORS:
        if f'error="{code}"' in challenge:
            return code
    try:
        doc = json.loads(response.content or b"{}")
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in ("code", "error"):
        value = doc.get(name)
        if value in DPOP_ERRORS:
            return str(value)
    return None


class ProofState:
    """What proofs need from earlier answers: each origin's nonce and the server's clock.

    Thread-safe and I/O-free. :meth:`observe` reads every answer from a server the SDK
    sends proofs to; :meth:`now` is the ``iat`` to use. The clock offset is the server's
    ``Date`` minus this device's wall clock, taken only when it is beyond the header's
    one-second resolution, so a device in sync sends its own clock's seconds.
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._nonces: dict[str, str] = {}
        self.offset_seconds = 0.0

    @staticmethod
    def _origin(url: httpx.URL) -> str:
        return f"{url.scheme}://{url.netloc.decode('ascii')}"

    def now(self) -> int:
        """Return the server's present time, whole seconds, as this device best knows it."""
        return int(self._wall() + self.offset_seconds)

    def nonce_for(self, url: httpx.URL) -> str | None:
        """Return the last nonce the origin of ``url`` sent, if any."""
        with self._lock:
            return self._nonces.get(self._origin(url))

    def observe(self, url: httpx.URL, response: httpx.Response) -> bool:
        """Take the nonce and the server's clock from an answer; say if the clock moved.

        Returns True when the offset changed by more than the noise: a proof refused for
        its ``iat`` is then worth one more try with the corrected time.
        """
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            with self._lock:
                self._nonces[self._origin(url)] = nonce
        date = response.headers.get("Date")
        if not date:
            return False
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, OverflowError):
            return False
        skew = server - self._wall()
        offset = skew if abs(skew) > _SKEW_NOISE_SECONDS else 0.0
        moved = abs(offset - self.offset_seconds) > _SKEW_NOISE_SECONDS
        self.offset_seconds = offset
        return moved
