"""Say why a request is refused, with Latchkey's own codes and the RFC 6750 challenge.

The tree, each with its HTTP status and the stable ``code`` Latchkey's ``/v1`` answers
with (API.md), so the SDK maps a resource server's refusal to the same typed error::

    Refusal
    ├── InvalidToken (401, invalid_token)     ├── SessionExpired (401, session_expired)
    ├── TokenExpired (401, token_expired)     ├── SessionRevoked (401, session_revoked)
    ├── InvalidDPoPProof (401, invalid_dpop_proof): RFC 9449, with a ``DPoP`` challenge
    │   └── UseDPoPNonce (401, use_dpop_nonce): with the nonce to use, ``DPoP-Nonce``
    ├── InvalidRequest (400, invalid_request): a malformed X-Device-Id, as on /v1
    └── StoreUnavailable (503, store_unavailable): fail closed, no challenge

Every 401 carries ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 section 3.1),
except a request that sent no credentials at all, which gets a bare ``Bearer`` challenge,
and a request sent with ``Authorization: DPoP``, which gets the DPoP one (RFC 9449 section
7.1: ``DPoP error="invalid_token", algs="ES256 EdDSA"``), as the token server answers.
``problem()`` is the RFC 9457 body the adapters send: the same document ``/v1/me`` would.
"""

from __future__ import annotations

from typing import Any

from .dpop import DPOP_ALGORITHMS

__all__ = [
    "PROBLEM_TYPE_BASE",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "Refusal",
    "SessionExpired",
    "SessionRevoked",
    "StoreUnavailable",
    "TokenExpired",
    "UseDPoPNonce",
]

PROBLEM_TYPE_BASE = "https://latchkey.dev/problems/"
_ALGS = " ".join(DPOP_ALGORITHMS)


class Refusal(Exception):
    """A request the verifier refuses: status, code, reason and the challenge to send."""

    status: int = 401
    code: str = "invalid_token"
    title: str = "The token is invalid"

    def __init__(self, detail: str | None = None, *, reason: str | None = None,
                 credentials_sent: bool = True) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.reason = reason
        self.credentials_sent = credentials_sent
        self.dpop_scheme = False  # the request used Authorization: DPoP (the verifier says)

    @property
    def www_authenticate(self) -> str | None:
        """Return the ``WWW-Authenticate`` value to answer with (RFC 6750), or ``None``."""
        if self.status != 401:
            return None
        if not self.credentials_sent:
            return "Bearer"  # section 3.1: no error code when no credentials were sent
        if self.dpop_scheme:
            return f'DPoP error="invalid_token", algs="{_ALGS}"'
        return 'Bearer error="invalid_token"'

    def headers(self) -> dict[str, str]:
        """Return the headers a refusal is answered with (the challenge, if any)."""
        challenge = self.www_authenticate
        return {"WWW-Authenticate": challenge} if challenge else {}

    def problem(self) -> dict[str, Any]:
        """Return the problem-details document (RFC 9457) the adapters answer with."""
        doc: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + self.code, "title": self.title,
                               "status": self.status, "detail": self.detail,
                               "code": self.code}
        if self.reason:
            doc["reason"] = self.reason
        return doc


class InvalidToken(Refusal):
    status, code, title = 401, "invalid_token", "The token is invalid"


class TokenExpired(Refusal):
    status, code, title = 401, "token_expired", "The access token has expired"


class SessionExpired(Refusal):
    status, code, title = 401, "session_expired", "The session has expired"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The session ended after its {reason} timeout", reason=reason)


class SessionRevoked(Refusal):
    status, code, title = 401, "session_revoked", "The session has been ended"

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason=reason or None)


class InvalidDPoPProof(Refusal):
    """A DPoP-bound token without a good proof by its key (RFC 9449 section 7.1)."""

    status, code, title = 401, "invalid_dpop_proof", "The DPoP proof is not acceptable"

    @property
    def www_authenticate(self) -> str | None:
        """Return the ``DPoP`` challenge with the error and the algorithms accepted."""
        detail = "".join(ch for ch in self.detail if 0x20 <= ord(ch) <= 0x7E
                         and ch not in '"\\')
        return (f'DPoP error="{self.code}", error_description="{detail}", '
                f'algs="{_ALGS}"')


class UseDPoPNonce(InvalidDPoPProof):
    """The proof lacks the current nonce: here it is (RFC 9449 section 9)."""

    status, code, title = 401, "use_dpop_nonce", "Use the DPoP nonce the server provides"

    def __init__(self, nonce: str) -> None:
        super().__init__(self.title)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        """Return the DPoP challenge and the nonce to use."""
        return {**super().headers(), "DPoP-Nonce": self.nonce}


class InvalidRequest(Refusal):
    status, code, title = 400, "invalid_request", "Invalid request"


class StoreUnavailable(Refusal):
    """The session store (or the issuer's keys) cannot be reached: refuse, never guess."""

    status, code, title = 503, "store_unavailable", "The session store is unavailable"
