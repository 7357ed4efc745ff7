"""Own every error the API can answer with, and render each as RFC 9457 problem details.

The tree, one class per condition, each carrying its stable ``code`` and HTTP status::

    ApiError
    ├── InvalidRequest (400)          ├── StepUpRequired (403)
    ├── TokenInUrl (400)              ├── RegistrationDisabled (403)
    ├── InvalidCredentials (401)      ├── NotFound (404)
    ├── InvalidToken (401) *          ├── MethodNotAllowed (405)
    ├── TokenExpired (401) *          ├── UsernameTaken (409)
    ├── SessionExpired (401) *        ├── PayloadTooLarge (413)
    ├── SessionRevoked (401) *        ├── UnsupportedMediaType (415)
    ├── RefreshTokenReused (401)      ├── WeakPassword (422)
    ├── InvalidDPoPProof (400 / 401)  ├── TooManyRequests (429, Retry-After)
    │   └── UseDPoPNonce (DPoP-Nonce) │
    │                                 ├── StoreUnavailable (503)
    │                                 └── InternalError (500, never with details)

``*`` marks errors that carry ``WWW-Authenticate: Bearer error="invalid_token"`` when they
answer a Bearer-protected request (RFC 6750 section 3), and ``DPoP error="invalid_token"``
when they answer a request sent with ``Authorization: DPoP`` (RFC 9449 section 7.1). The
DPoP errors are 400 from token endpoints and 401 with their own ``WWW-Authenticate: DPoP``
challenge from protected resources (RFC 9449 sections 7.1 and 8). The codes are the contract with
clients (API.md); their titles are for humans and may change.

The conditions a resource server answers with too (``invalid_request``, ``invalid_token``,
``token_expired``, ``session_expired``, ``session_revoked``, ``invalid_dpop_proof``,
``use_dpop_nonce``, ``store_unavailable``), the problem type base and the Bearer and DPoP
challenges are owned by ``latchkey_resource.problems``: these classes take their status,
code and title from its rows, so the two servers cannot answer one condition two ways.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from flask import Flask, Response, g, json
from latchkey_resource import problems
from limits.errors import StorageError
from werkzeug.exceptions import HTTPException

__all__ = [
    "ERROR_CODES",
    "ApiError",
    "InternalError",
    "InvalidCredentials",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RefreshTokenReused",
    "RegistrationDisabled",
    "SessionExpired",
    "SessionRevoked",
    "StepUpRequired",
    "StoreUnavailable",
    "TokenExpired",
    "TokenInUrl",
    "TooManyRequests",
    "UnsupportedMediaType",
    "UseDPoPNonce",
    "UsernameTaken",
    "WeakPassword",
    "WrongClient",
    "init_app",
    "problem_response",
]

_log = logging.getLogger("latchkey.errors")



class ApiError(Exception):
    """An error the client may see: a stable code, a status and a safe message."""

    status, code, title = problems.INVALID_REQUEST
    bearer_challenge: bool = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """Return the problem-details document for this error."""
        doc = problems.problem_document(self.code, self.title, self.status, self.detail)
        doc.update(self.extra)
        return doc


class InvalidRequest(ApiError):
    status, code, title = problems.INVALID_REQUEST


class UnprocessableRequest(InvalidRequest):
    status = 422


class TokenInUrl(ApiError):
    status, code, title = 400, "token_in_url", "Tokens must never be sent in a URL"


class InvalidCredentials(ApiError):
    status, code, title = 401, "invalid_credentials", "Invalid username or password"


class InvalidToken(ApiError):
    status, code, title = problems.INVALID_TOKEN
    bearer_challenge = True


class WrongClient(InvalidToken):
    """A refresh token presented by a client it was not issued to (RFC 6749 section 6)."""

    def __init__(self) -> None:
        super().__init__("The refresh token was issued to another client")


class TokenExpired(ApiError):
    status, code, title = problems.TOKEN_EXPIRED
    bearer_challenge = True


class SessionExpired(ApiError):
    status, code, title = problems.SESSION_EXPIRED
    bearer_challenge = True

    def __init__(self, reason: str) -> None:
        super().__init__(f"The session ended after its {reason} timeout", extra={"reason": reason})


class SessionRevoked(ApiError):
    status, code, title = problems.SESSION_REVOKED
    bearer_challenge = True

    def __init__(self, reason: str | None) -> None:
        super().__init__(extra={"reason": reason} if reason else None)


class RefreshTokenReused(ApiError):
    status, code, title = 401, "refresh_token_reused", "The refresh token was already used"


class InvalidDPoPProof(ApiError):
    """A DPoP proof missing, malformed, replayed or by the wrong key (RFC 9449 section 7.1).

    ``resource=True`` answers a protected request: 401 with a ``DPoP`` challenge; else a
    token request: 400 (section 5).
    """

    _, code, title = problems.INVALID_DPOP_PROOF
    status = 400  # from a token endpoint (section 5); 401 from a protected resource

    def __init__(self, detail: str | None = None, *, resource: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if resource:
            self.status = 401
            headers["WWW-Authenticate"] = problems.dpop_challenge(self.code,
                                                                 detail or self.title)
        super().__init__(detail, headers=headers)


class UseDPoPNonce(InvalidDPoPProof):
    """The proof lacks the server's current nonce: here it is (RFC 9449 section 8)."""

    _, code, title = problems.USE_DPOP_NONCE

    def __init__(self, nonce: str, *, resource: bool = False) -> None:
        super().__init__(self.title, resource=resource, headers={"DPoP-Nonce": nonce})


class StepUpRequired(ApiError):
    status, code, title = 403, "step_up_required", "Re-authenticate to do this"


class RegistrationDisabled(ApiError):
    status, code, title = 403, "registration_disabled", "Registration is switched off"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"

    def __init__(self, allowed: Iterable[str]) -> None:
        # RFC 9110 section 15.5.6: a 405 must say what the resource does allow; an empty
        # Allow is how it says "nothing" (a path that does not exist).
        super().__init__(headers={"Allow": ", ".join(sorted(allowed))})


class UsernameTaken(ApiError):
    status, code, title = 409, "username_taken", "That username is taken"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "The request body is too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Send application/json"


class WeakPassword(ApiError):
    status, code, title = 422, "weak_password", "The password is too weak"


class TooManyRequests(ApiError):
    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        retry = max(1, int(retry_after_seconds))
        super().__init__(detail, headers={"Retry-After": str(retry)})


class StoreUnavailable(ApiError):
    status, code, title = problems.STORE_UNAVAILABLE


class InternalError(ApiError):
    status, code, title = 500, "internal_error", "Internal server error"


ERROR_CODES: dict[str, int] = {
    cls.code: cls.status
    for cls in (
        InvalidRequest, TokenInUrl, InvalidCredentials, InvalidToken, TokenExpired,
        SessionExpired, SessionRevoked, RefreshTokenReused, InvalidDPoPProof, UseDPoPNonce,
        StepUpRequired,
        RegistrationDisabled, NotFound, MethodNotAllowed, UsernameTaken, PayloadTooLarge,
        UnsupportedMediaType, WeakPassword, TooManyRequests, StoreUnavailable, InternalError,
    )
}

# werkzeug's HTTP exceptions the framework raises itself, mapped onto our table.
_HTTP_MAP: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: TooManyRequests,  # Flask-Limiter's RateLimitExceeded (throttle.py)
}

# A store failure that escaped ``store._store_call``: Flask-Limiter's Redis storage
# (limits wraps its errors in StorageError), or a raw redis-py error. Fail closed: 503.
_STORE_ERRORS: tuple[type[Exception], ...] = (
    StorageError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    redis.exceptions.RedisClusterException,  # no node of a cluster answers at all
)


def _retry_after_seconds(error: HTTPException) -> int:
    """Return when a client refused by the rate limiter may try again, in seconds.

    ``throttle.py`` measures the moving window when it refuses; failing that, the whole
    window of the limit that was hit is a safe upper bound.
    """
    measured = g.get("retry_after_seconds")
    if measured:
        return int(measured)
    item = getattr(getattr(error, "limit", None), "limit", None)
    return int(item.get_expiry()) if item is not None else 60


def problem_response(error: ApiError) -> Response:
    """Render an error as ``application/problem+json`` with its headers."""
    resp = Response(
        json.dumps(error.body()), status=error.status, mimetype="application/problem+json"
    )
    for name, value in error.headers.items():
        resp.headers[name] = value
    if error.bearer_challenge and getattr(g, "dpop_presented", False):
        resp.headers["WWW-Authenticate"] = problems.dpop_challenge()
    elif error.bearer_challenge and getattr(g, "bearer_presented", False):
        resp.headers["WWW-Authenticate"] = problems.bearer_challenge()
    return resp


def init_app(app: Flask) -> None:
    """Register the one handler that turns every exception into problem details."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        # An exception raised after the view (an after_request hook, such as Flask-Limiter
        # counting a failure) reaches us wrapped in a 500: unwrap what we know.
        original = getattr(error, "original_exception", None)
        if isinstance(original, ApiError):
            return problem_response(original)
        if isinstance(original, _STORE_ERRORS):
            return _store_error(original)
        if (error.code or 500) >= 500 and (error.code or 500) not in _HTTP_MAP:
            # A failure of ours (an exception in an after_request hook, say): the same
            # answer as any unexpected exception, logged under a correlation id.
            return _unexpected(original if isinstance(original, Exception) else error)
        cls = _HTTP_MAP.get(error.code or 500)
        if cls is TooManyRequests:
            return problem_response(TooManyRequests(_retry_after_seconds(error)))
        if cls is MethodNotAllowed:
            return problem_response(MethodNotAllowed(getattr(error, "valid_methods", None)
                                                     or ()))
        if cls is None:
            api = ApiError("Request could not be handled")
            api.status = error.code or 400
        else:
            api = cls()
        return problem_response(api)

    @app.errorhandler(StorageError)
    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(redis.exceptions.RedisClusterException)  # no cluster node answers
    def _store_error(error: Exception) -> Response:
        _log.warning("store unavailable", extra={"event": "store_unavailable",
                                                 "lk_error": type(error).__name__})
        return problem_response(StoreUnavailable())

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Never a traceback to the client: log it under a correlation id the client sees,
        # the request's own id, so it also finds the request's other log lines.
        # Imported here: access_log -> redaction -> tokens imports this module.
        from .access_log import current_request_id

        correlation_id = current_request_id()
        _log.error(
            "unhandled exception",
            exc_info=error,
            extra={"event": "internal_error", "correlation_id": correlation_id},
        )
        return problem_response(
            InternalError(
                "Something went wrong on our side", extra={"correlation_id": correlation_id}
            )
        )
