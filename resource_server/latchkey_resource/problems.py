"""Own the conditions the token server and every resource server both answer with.

One table, so a code, a status or a title changed here changes both error trees: the token
server's ``ApiError`` classes (``latchkey_server.errors``) and this package's ``Refusal``
classes (``refusals.py``) take their values from the rows below, and both format their
challenges with the builders below. The token server already depends on this package; the
SDK does not (it is a separate wheel), so it keeps its own mapping and a test proves its
codes are these (``tests/sdk/test_errors.py``).

Each row is ``(status, code, title)``, unpacked straight into a class body::

    class InvalidToken(Refusal):
        status, code, title = problems.INVALID_TOKEN

The codes are the contract with clients (API.md); their titles are for humans and may
change. The DPoP codes are RFC 9449's, named once in ``dpop.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .dpop import DPOP_ALGORITHMS
from .dpop import INVALID_DPOP_PROOF as _INVALID_DPOP_PROOF_CODE
from .dpop import USE_DPOP_NONCE as _USE_DPOP_NONCE_CODE

__all__ = [
    "DPOP_CHALLENGE_ALGS",
    "INVALID_DPOP_PROOF",
    "INVALID_REQUEST",
    "INVALID_TOKEN",
    "PROBLEM_TYPE_BASE",
    "SESSION_EXPIRED",
    "SESSION_REVOKED",
    "SHARED_CONDITIONS",
    "STORE_UNAVAILABLE",
    "TOKEN_EXPIRED",
    "USE_DPOP_NONCE",
    "Condition",
    "bearer_challenge",
    "dpop_challenge",
    "problem_document",
    "quoted",
]

PROBLEM_TYPE_BASE = "https://latchkey.dev/problems/"
# The algorithms a DPoP challenge advertises (RFC 9449 section 7.1, ``algs``): the ones the
# proof checker accepts, so the two cannot drift apart.
DPOP_CHALLENGE_ALGS = " ".join(DPOP_ALGORITHMS)


class Condition(NamedTuple):
    """One condition both servers answer with: HTTP status, stable code, human title."""

    status: int
    code: str
    title: str


INVALID_REQUEST = Condition(400, "invalid_request", "Invalid request")
INVALID_TOKEN = Condition(401, "invalid_token", "The token is invalid")
TOKEN_EXPIRED = Condition(401, "token_expired", "The access token has expired")
SESSION_EXPIRED = Condition(401, "session_expired", "The session has expired")
SESSION_REVOKED = Condition(401, "session_revoked", "The session has been ended")
# 401 from a protected resource (RFC 9449 section 7.1); the token server's token endpoints
# answer the same code with 400 (section 5), and say so where they do.
INVALID_DPOP_PROOF = Condition(401, _INVALID_DPOP_PROOF_CODE,
                               "The DPoP proof is not acceptable")
USE_DPOP_NONCE = Condition(401, _USE_DPOP_NONCE_CODE, "Use the DPoP nonce the server provides")
STORE_UNAVAILABLE = Condition(503, "store_unavailable", "The session store is unavailable")

SHARED_CONDITIONS: tuple[Condition, ...] = (
    INVALID_REQUEST, INVALID_TOKEN, TOKEN_EXPIRED, SESSION_EXPIRED, SESSION_REVOKED,
    INVALID_DPOP_PROOF, USE_DPOP_NONCE, STORE_UNAVAILABLE,
)


def quoted(text: str) -> str:
    """Return ``text`` safe inside a quoted-string of an auth-param (RFC 9110 11.2)."""
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')


def bearer_challenge(error: str | None = INVALID_TOKEN.code) -> str:
    """Return the RFC 6750 section 3 challenge; ``None``: a bare one (no credentials sent)."""
    return f'Bearer error="{error}"' if error else "Bearer"


def dpop_challenge(error: str = INVALID_TOKEN.code, description: str | None = None) -> str:
    """Return the RFC 9449 section 7.1 challenge: the error, why, and the ``algs`` accepted."""
    described = f'error_description="{quoted(description)}", ' if description is not None else ""
    return f'DPoP error="{error}", {described}algs="{DPOP_CHALLENGE_ALGS}"'


def problem_document(code: str, title: str, status: int, detail: str) -> dict[str, Any]:
    """Return the RFC 9457 problem-details document both servers answer with."""
    return {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status,
            "detail": detail, "code": code}
