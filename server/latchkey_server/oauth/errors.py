"""Answer the OAuth endpoints' errors in the RFC 6749 section 5.2 shape, not problem+json.

The classes are Authlib's own (``authlib.oauth2.rfc6749.errors``, the model STYLE.md names),
so the body (``error``, ``error_description``), ``Cache-Control: no-store`` and
``Pragma: no-cache`` are exactly what Authlib's and oauthlib's clients parse; what is
Latchkey's is the choice of error for each condition, below, and two statuses RFC 6749
leaves to the server (413 for a body over the limit, 429 and 503 for the throttle and an
unreachable store, with ``Retry-After`` where it applies).

Section 5.2's table, as the endpoints use it::

    invalid_request         400  malformed form, a repeated or missing parameter, any
                                 other content type, a token in the URL (X1)
    invalid_client          401  bad client credentials in ``Authorization: Basic``
                                 (with ``WWW-Authenticate: Basic``); 400 when the client
                                 named itself in the form only
    invalid_grant           400  a refresh token that is expired, revoked, reused,
                                 unknown, or another client's
    unauthorized_client     400  a client of a type that may not use this endpoint
    unsupported_grant_type  400  any grant but ``refresh_token``
    invalid_dpop_proof      400  RFC 9449 section 5: a proof missing (a bound session's
                                 token, or ``DPOP=required``), bad, replayed, or by
                                 another key than the session's
    use_dpop_nonce          400  RFC 9449 section 8: with the nonce in ``DPoP-Nonce``
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from flask import Response, json

from ..errors import (
    ApiError,
    InvalidDPoPProof,
    InvalidToken,
    PayloadTooLarge,
    RefreshTokenReused,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    TokenInUrl,
    TooManyRequests,
)

__all__ = [
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "OAuth2Error",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "from_api_error",
    "oauth_response",
]


class _StatusError(OAuth2Error):
    """A condition RFC 6749 has no code for, answered in its shape with an HTTP status."""

    def __init__(self, error: str, status: int, description: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description=description, status_code=status, error=error)
        self._extra_headers = dict(headers or {})

    def get_headers(self) -> list[tuple[str, str]]:
        """Return Authlib's JSON, no-store headers plus this error's own."""
        return [*super().get_headers(), *self._extra_headers.items()]


def from_api_error(error: ApiError) -> OAuth2Error:
    """Return the RFC 6749 error for an error of the session service or the transport.

    A refresh token the session service refuses, for any reason, is ``invalid_grant``
    (section 5.2 names expired, revoked and "issued to another client" alike); the
    transport's refusals (a token in the URL, a non-form body, TRACE) are
    ``invalid_request``; the rest keep their HTTP status.
    """
    if isinstance(error, InvalidDPoPProof):
        # RFC 9449 sections 5 and 8: the token endpoint's DPoP errors, 400, in this shape
        # (with the DPoP-Nonce header for use_dpop_nonce).
        return _StatusError(error.code, 400, _ascii(error.detail), error.headers)
    if isinstance(error, InvalidToken | SessionExpired | SessionRevoked | RefreshTokenReused):
        return InvalidGrantError(description=_ascii(error.detail))
    if isinstance(error, TooManyRequests):
        return _StatusError("too_many_requests", 429, "Too many requests", error.headers)
    if isinstance(error, StoreUnavailable):
        # The authorization endpoint's temporarily_unavailable, at the status it means.
        return _StatusError("temporarily_unavailable", 503, "Try again shortly")
    if isinstance(error, TokenInUrl):
        return InvalidRequestError(description="Send tokens in the form body, never in a URL")
    if isinstance(error, PayloadTooLarge):
        return _StatusError("invalid_request", 413, "The request body is too large")
    if error.status == 405:
        return _StatusError("invalid_request", 405, "Method not allowed", error.headers)
    if error.status >= 500:
        return _StatusError("server_error", 500, "Something went wrong on our side")
    return InvalidRequestError(description=_ascii(error.detail))


def _ascii(text: str) -> str:
    """Return ``text`` within section 5.2's error_description alphabet (printable ASCII
    without ``"`` and ``\\``), which Authlib enforces when the error is built."""
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')


def oauth_response(error: OAuth2Error) -> Response:
    """Render an OAuth error: section 5.2 JSON, no-store, ``WWW-Authenticate`` where due."""
    status, body, headers = error()
    resp = Response(json.dumps(body), status=status)
    for name, value in headers:
        resp.headers[name] = value
    return resp
