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
Every status, code and title, the problem type base and the challenges come from
``problems.py``, the one table the token server's ``ApiError`` tree takes them from too:
only the classes (this package's API) live here.
"""

from __future__ import annotations

from typing import Any

from . import problems
from .problems import PROBLEM_TYPE_BASE

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


class Refusal(Exception):
    """A request the verifier refuses: status, code, reason and the challenge to send."""

    status, code, title = problems.INVALID_TOKEN

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
            return problems.bearer_challenge(None)  # 3.1: no error without credentials
        if self.dpop_scheme:
            return problems.dpop_challenge()
        return problems.bearer_challenge()

    def headers(self) -> dict[str, str]:
        """Return the headers a refusal is answered with (the challenge, if any)."""
        challenge = self.www_authenticate
        return {"WWW-Authenticate": challenge} if challenge else {}

    def problem(self) -> dict[str, Any]:
        """Return the problem-details document (RFC 9457) the adapters answer with."""
        doc = problems.problem_document(self.code, self.title, self.status, self.detail)
        if self.reason:
            doc["reason"] = self.reason
        return doc


class InvalidToken(Refusal):
    status, code, title = problems.INVALID_TOKEN


class TokenExpired(Refusal):
    status, code, title = problems.TOKEN_EXPIRED


class SessionExpired(Refusal):
    status, code, title = problems.SESSION_EXPIRED

    def __init__(self, reason: str) -> None:
        super().__init__(f"The session ended after its {reason} timeout", reason=reason)


class SessionRevoked(Refusal):
    status, code, title = problems.SESSION_REVOKED

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason=reason or None)


class InvalidDPoPProof(Refusal):
    """A DPoP-bound token without a good proof by its key (RFC 9449 section 7.1)."""

    status, code, title = problems.INVALID_DPOP_PROOF

    @property
    def www_authenticate(self) -> str | None:
        """Return the ``DPoP`` challenge with the error and the algorithms accepted."""
        return problems.dpop_challenge(self.code, self.detail)


class UseDPoPNonce(InvalidDPoPProof):
    """The proof lacks the current nonce: here it is (RFC 9449 section 9)."""

    status, code, title = problems.USE_DPOP_NONCE

    def __init__(self, nonce: str) -> None:
        super().__init__(self.title)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        """Return the DPoP challenge and the nonce to use."""
        return {**super().headers(), "DPoP-Nonce": self.nonce}


class InvalidRequest(Refusal):
    status, code, title = problems.INVALID_REQUEST


class StoreUnavailable(Refusal):
    """The session store (or the issuer's keys) cannot be reached: refuse, never guess."""

    status, code, title = problems.STORE_UNAVAILABLE
