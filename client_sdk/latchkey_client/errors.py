"""Turn every way a call can fail into one typed exception an app can show.

The tree (``retryable`` classes are the ones the SDK's retry loop may try again)::

    LatchkeyError
    ├── ConfigurationError          bad option, e.g. a plain http:// base URL off loopback
    ├── InsecureRequestError        a token-like query parameter, a foreign origin
    ├── StorageError                secure storage failed
    │   ├── InsecureStorageError    a plaintext or null keyring backend was refused
    │   ├── StorageUnavailable *    locked or unreachable for now: wipe nothing, try later
    │   └── StorageLost             key gone or ciphertext unreadable: the secret is lost
    ├── NetworkError *              could not reach the server / connection dropped
    │   ├── NetworkTimeoutError *   connect, read or total deadline passed
    │   └── PinningError            the server's key is not one of the pinned keys
    ├── NotSignedInError            no session on this device
    ├── DPoPProofError              a DPoP proof could not be made or was refused
    │   ├── DPoPKeyUnavailableError * the device key is locked or unreachable for now
    │   ├── DPoPKeyLostError        the device key is gone for good (signed out)
    │   └── DPoPProofRefusedError   the server refused the proof (also an ApiError)
    ├── ClientClosedError           the client was closed; make a new one
    └── ApiError                    the server answered with problem+json; has status, code
        ├── InvalidRequestError     400/413/415/422 (WeakPasswordError, TokenInUrlError)
        ├── InvalidCredentialsError 401 wrong username or password
        ├── InvalidTokenError       401 malformed or unknown token
        ├── SessionEndedError       the session is over; the SDK has wiped local tokens
        │   ├── SessionExpiredError 401, ``reason``: idle | absolute
        │   └── SessionRevokedError 401, ``reason``: logout | remote | reuse | ...
        ├── StepUpRequiredError     403 re-authenticate, then retry
        ├── ForbiddenError          403 e.g. registration disabled
        ├── NotFoundError           404
        ├── ConflictError           409 (UsernameTakenError)
        ├── RateLimitedError *      429, ``retry_after_seconds``
        └── ServerError *           5xx, store_unavailable

Messages never contain a token: they are built from the server's ``code``, ``title`` and
``detail`` (which the server keeps token-free) and from this module's own wording. Lower-level
errors are chained with ``raise ... from exc`` so a developer still sees the cause.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import httpx

__all__ = [
    "ApiError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "DPoPKeyLostError",
    "DPoPKeyUnavailableError",
    "DPoPProofError",
    "DPoPProofRefusedError",
    "ForbiddenError",
    "InsecureRequestError",
    "InsecureStorageError",
    "InvalidCredentialsError",
    "InvalidRequestError",
    "InvalidTokenError",
    "LatchkeyError",
    "NetworkError",
    "NetworkTimeoutError",
    "NotFoundError",
    "NotSignedInError",
    "PinningError",
    "RateLimitedError",
    "ServerError",
    "SessionEndedError",
    "SessionExpiredError",
    "SessionRevokedError",
    "StepUpRequiredError",
    "StorageError",
    "StorageLost",
    "StorageUnavailable",
    "TokenInUrlError",
    "UsernameTakenError",
    "WeakPasswordError",
    "challenge_error",
    "error_from_response",
]


class LatchkeyError(Exception):
    """Base of every exception the SDK raises."""

    #: True when trying the same call again later may succeed.
    retryable: bool = False


class ConfigurationError(LatchkeyError, ValueError):
    """An option is unsafe or inconsistent; fix the code, not the network."""


class InsecureRequestError(LatchkeyError):
    """The SDK refused to send a request that could leak a token."""


class StorageError(LatchkeyError):
    """Secure storage could not load, save or clear a value."""


class InsecureStorageError(StorageError, ConfigurationError):
    """The chosen storage would keep a token in plaintext (or not at all) and was refused."""


class StorageUnavailable(StorageError):
    """The store refused for now (locked since boot, collection locked, I/O error).

    The secret is still there: keep the session in memory, wipe nothing, try again later
    (on the next call or on resume). Signing the user out here is the bug M2 forbids.
    """

    retryable = True


class StorageLost(StorageError):
    """The stored secret is gone for good: key invalidated or missing, ciphertext unreadable.

    A restored backup, a platform-invalidated key, a rotated passphrase or a tampered file:
    nothing will read it again, so the right end is a clean signed-out state, not a crash.
    """


class NetworkError(LatchkeyError):
    """The server could not be reached, or the connection broke mid-call."""

    retryable = True


class NetworkTimeoutError(NetworkError):
    """A connect, read or total deadline passed."""


class PinningError(NetworkError):
    """The server's public key matched none of the pins: possibly an interception."""

    retryable = False


class NotSignedInError(LatchkeyError):
    """The call needs a session and this client has none."""


class ClientClosedError(LatchkeyError, RuntimeError):
    """The client was closed (``close()``/``aclose()``) and sends nothing more.

    A ``RuntimeError`` too, as httpx's own closed-client error is. A logout whose
    revocation meets a closed client keeps it pending for the next client on the storage.
    """


class DPoPProofError(LatchkeyError):
    """A DPoP proof (RFC 9449) could not be made, or the server refused it."""


class DPoPKeyUnavailableError(DPoPProofError):
    """The device's DPoP key cannot be used now (key store locked, unreachable).

    Like :class:`StorageUnavailable`: the key is still there, nothing is wiped, the call
    may be tried again later.
    """

    retryable = True


class DPoPKeyLostError(DPoPProofError):
    """The device's DPoP key is gone for good (invalidated, restored backup, deleted).

    A session bound to it can never be refreshed again: the SDK signs out with reason
    ``storage_lost``; the next sign-in creates a new key.
    """


class ApiError(LatchkeyError):
    """The server refused the call with a problem+json body.

    ``status`` is the HTTP status and ``code`` the server's stable machine-readable code
    (API.md); ``detail`` is the server's human-readable explanation.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int = 0,
        code: str = "unknown",
        detail: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(message or detail or code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r})"


class DPoPProofRefusedError(DPoPProofError, ApiError):
    """The server refused this device's DPoP proof (``invalid_dpop_proof``).

    Retried once already where a retry could help (a new nonce, a corrected clock); what
    is left is a proof the server will not take.
    """


class InvalidRequestError(ApiError):
    """The server rejected the request's shape or content (400, 413, 415, 422)."""


class WeakPasswordError(InvalidRequestError):
    """The new password is too short or too common."""


class TokenInUrlError(InvalidRequestError):
    """The server saw a token in a URL (it revokes that session)."""


class InvalidCredentialsError(ApiError):
    """The username or password is wrong."""


class InvalidTokenError(ApiError):
    """The server does not recognise the token at all."""


class SessionEndedError(ApiError):
    """The session is over on the server; local tokens have been wiped.

    ``reason`` is the server's reason where it gave one (API.md lists them).
    """

    def __init__(self, message: str | None = None, *, reason: str | None = None, **kw: Any) -> None:
        self.reason = reason
        super().__init__(message, **kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, reason={self.reason!r})"


class SessionExpiredError(SessionEndedError):
    """The session passed its idle or absolute limit (``reason``: ``idle``/``absolute``)."""


class SessionRevokedError(SessionEndedError):
    """The session was ended: logout elsewhere, password change, refresh-token reuse, ..."""


class StepUpRequiredError(ApiError):
    """The action needs a recent re-authentication: call ``reauthenticate`` and retry."""


class ForbiddenError(ApiError):
    """The server refuses the action for this caller (e.g. registration switched off)."""


class NotFoundError(ApiError):
    """The resource does not exist (or belongs to someone else)."""


class ConflictError(ApiError):
    """The request conflicts with existing state."""


class UsernameTakenError(ConflictError):
    """Someone already registered that username."""


class RateLimitedError(ApiError):
    """Too many attempts; wait ``retry_after_seconds`` before trying again."""

    retryable = True

    def __init__(self, message: str | None = None, *, retry_after_seconds: float | None = None,
                 **kw: Any) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, **kw)


class ServerError(ApiError):
    """The server failed or its store is unavailable; usually temporary."""

    retryable = True


_BY_CODE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequestError,
    "token_in_url": TokenInUrlError,
    "payload_too_large": InvalidRequestError,
    "unsupported_media_type": InvalidRequestError,
    "weak_password": WeakPasswordError,
    "method_not_allowed": InvalidRequestError,
    "invalid_credentials": InvalidCredentialsError,
    "invalid_token": InvalidTokenError,
    "session_expired": SessionExpiredError,
    "session_revoked": SessionRevokedError,
    "refresh_token_reused": SessionRevokedError,
    "step_up_required": StepUpRequiredError,
    "registration_disabled": ForbiddenError,
    "not_found": NotFoundError,
    "username_taken": UsernameTakenError,
    "too_many_requests": RateLimitedError,
    "store_unavailable": ServerError,
    "invalid_dpop_proof": DPoPProofRefusedError,
    "use_dpop_nonce": DPoPProofRefusedError,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError,
    401: InvalidTokenError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
}


def _problem(response: httpx.Response) -> dict[str, Any]:
    """Return the problem+json document, or an empty dict when the body is not one."""
    try:
        doc = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return cast("dict[str, Any]", doc) if isinstance(doc, dict) else {}  # a JSON object


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Return how long the answer asks us to wait (``Retry-After``), or ``None``.

    RFC 9110 10.2.3 allows seconds or an HTTP-date. Latchkey sends seconds on 429; a load
    balancer in front of it may send either on 502/503/504. A date is measured against the
    answer's own ``Date`` header where there is one, so a device clock that is off does not
    change the wait.
    """
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    seconds: float | None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _seconds_until(raw, response.headers.get("Date"))
    return None if seconds is None or not math.isfinite(seconds) else max(0.0, seconds)


def _seconds_until(http_date: str, date_header: str | None) -> float | None:
    """Return the seconds from the answer's ``Date`` (or now) to ``http_date``."""
    try:
        then = parsedate_to_datetime(http_date)
        now = parsedate_to_datetime(date_header) if date_header else None
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a date without a zone is not one
    if now is None or now.tzinfo is None:
        now = datetime.now(UTC)
    return (then - now).total_seconds()


#: One item of a ``WWW-Authenticate`` value (RFC 9110 s11.6.1): an auth scheme (a bare
#: token) or a ``name=value`` parameter, the value a token or a quoted string with escapes.
_CHALLENGE_ITEM = re.compile(r'([^\s=,"]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*))?')
_ERROR_CODE = re.compile(r"[A-Za-z0-9_]{1,64}")


def challenge_error(response: httpx.Response) -> str | None:
    """Return the ``error`` of the answer's ``Bearer`` or ``DPoP`` challenge, or ``None``.

    The fallback code of an API that answers as RFC 6750 s3 (and RFC 9449 s7.1) says and
    sends no problem+json (a service in another language checking tokens by introspection):
    ``invalid_token`` there means what it means from Latchkey, refresh once and resend.
    """
    for value in response.headers.get_list("WWW-Authenticate"):
        scheme = ""
        for match in _CHALLENGE_ITEM.finditer(value):
            name, raw = match.group(1), match.group(2)
            if raw is None:
                scheme = name.lower()  # a bare token starts the next challenge
                continue
            if scheme in {"bearer", "dpop"} and name.lower() == "error":
                code = raw[1:-1] if raw.startswith('"') else raw
                if _ERROR_CODE.fullmatch(code):
                    return code.lower()
    return None


def error_from_response(response: httpx.Response) -> ApiError:
    """Map an error response (status >= 400, body already read) onto the tree above.

    The problem+json ``code`` decides; without one, a ``WWW-Authenticate`` challenge's
    ``error``; then the status.
    """
    doc = _problem(response)
    code = doc.get("code") if isinstance(doc.get("code"), str) else challenge_error(response)
    detail = doc.get("detail") if isinstance(doc.get("detail"), str) else None
    status = response.status_code
    if code in _BY_CODE:
        cls = _BY_CODE[code]
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    code = code or f"http_{status}"
    message = f"{code} ({status})" + (f": {detail}" if detail else "")
    kwargs: dict[str, Any] = {"status": status, "code": code, "detail": detail}
    if issubclass(cls, SessionEndedError):
        reason = doc.get("reason") if isinstance(doc.get("reason"), str) else None
        if code == "refresh_token_reused":
            reason = "reuse"
        return cls(message, reason=reason, **kwargs)
    if issubclass(cls, RateLimitedError):
        return cls(message, retry_after_seconds=retry_after_seconds(response), **kwargs)
    return cls(message, **kwargs)
