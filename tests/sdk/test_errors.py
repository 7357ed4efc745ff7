"""Every server error code maps to one typed exception an app can show (S3)."""

from __future__ import annotations

import httpx
import pytest
from latchkey_client import (
    ApiError,
    DPoPProofRefusedError,
    ForbiddenError,
    InvalidCredentialsError,
    InvalidRequestError,
    InvalidTokenError,
    LatchkeyError,
    NetworkError,
    NetworkTimeoutError,
    NotFoundError,
    PinningError,
    RateLimitedError,
    ServerError,
    SessionExpiredError,
    SessionRevokedError,
    StepUpRequiredError,
    TokenInUrlError,
    UsernameTakenError,
    WeakPasswordError,
    error_from_response,
)
from latchkey_client.errors import challenge_error, retry_after_seconds


def problem(status: int, code: str | None, headers: dict[str, str] | None = None,
            **extra: object) -> httpx.Response:
    doc = {"type": "x", "title": "t", "status": status, "detail": "d", **extra}
    if code:
        doc["code"] = code
    return httpx.Response(status, json=doc, headers=headers)


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "invalid_request", InvalidRequestError),
    (400, "token_in_url", TokenInUrlError),
    (401, "invalid_credentials", InvalidCredentialsError),
    (401, "invalid_token", InvalidTokenError),
    (403, "step_up_required", StepUpRequiredError),
    (403, "registration_disabled", ForbiddenError),
    (404, "not_found", NotFoundError),
    (409, "username_taken", UsernameTakenError),
    (413, "payload_too_large", InvalidRequestError),
    (415, "unsupported_media_type", InvalidRequestError),
    (422, "weak_password", WeakPasswordError),
    (503, "store_unavailable", ServerError),
    (500, "internal_error", ServerError),
    (502, None, ServerError),
])
def test_codes_map_to_typed_errors(status: int, code: str | None, cls: type[ApiError]) -> None:
    error = error_from_response(problem(status, code))
    assert type(error) is cls
    assert error.status == status
    assert isinstance(error, LatchkeyError)


def test_session_errors_carry_the_servers_reason() -> None:
    expired = error_from_response(problem(401, "session_expired", reason="idle"))
    assert isinstance(expired, SessionExpiredError) and expired.reason == "idle"
    revoked = error_from_response(problem(401, "session_revoked", reason="password_change"))
    assert isinstance(revoked, SessionRevokedError) and revoked.reason == "password_change"
    reused = error_from_response(problem(401, "refresh_token_reused"))
    assert isinstance(reused, SessionRevokedError) and reused.reason == "reuse"


def test_rate_limit_carries_retry_after_and_is_retryable() -> None:
    error = error_from_response(problem(429, "too_many_requests", {"Retry-After": "12"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after_seconds == 12.0 and error.retryable


def test_retryable_marker_is_set_only_where_a_retry_can_help() -> None:
    assert NetworkError.retryable and NetworkTimeoutError.retryable and ServerError.retryable
    assert not PinningError.retryable and not InvalidCredentialsError.retryable
    assert not SessionRevokedError.retryable


def test_non_json_error_body_still_maps_by_status() -> None:
    error = error_from_response(httpx.Response(404, text="<html>nope</html>"))
    assert isinstance(error, NotFoundError) and error.code == "http_404"


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": " 2.5 "}, 2.5),
    ({"Retry-After": "-3"}, 0.0),
    # An HTTP-date, measured from the answer's own Date: the device clock plays no part.
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT",
      "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}, 30.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "inf"}, None),
    ({}, None),
])
def test_retry_after_is_read_as_seconds_or_an_http_date(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(httpx.Response(503, headers=headers)) == seconds


@pytest.mark.parametrize(("challenge", "code"), [
    ('Bearer error="invalid_token"', "invalid_token"),
    ('Bearer realm="api", error="invalid_token", error_description="expired"', "invalid_token"),
    ('DPoP algs="ES256", error="use_dpop_nonce"', "use_dpop_nonce"),
    ('Basic realm="x", Bearer error="insufficient_scope"', "insufficient_scope"),
    ('Bearer realm="api"', None),
    ('Basic realm="error=\\"x\\""', None),
])
def test_an_rfc_6750_challenge_without_a_problem_body_is_read_by_its_error(
    challenge: str, code: str | None
) -> None:
    """A service in any language answers as RFC 6750 says, with no problem+json."""
    response = httpx.Response(401, headers={"WWW-Authenticate": challenge})
    assert challenge_error(response) == code
    error = error_from_response(response)
    # A DPoP refusal belongs to its own family (P1); every other 401 is an invalid token.
    expected = DPoPProofRefusedError if code == "use_dpop_nonce" else InvalidTokenError
    assert isinstance(error, expected)
    assert error.code == (code or "http_401")


# What the SDK makes of each condition both servers answer with (latchkey_resource.problems).
_SHARED_CONDITION_ERRORS: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_token": InvalidTokenError,
    "token_expired": InvalidTokenError,  # by its 401; auth.py refreshes on the code
    "session_expired": SessionExpiredError,
    "session_revoked": SessionRevokedError,
    "invalid_dpop_proof": DPoPProofRefusedError,
    "use_dpop_nonce": DPoPProofRefusedError,
    "store_unavailable": ServerError,
}


def test_the_sdks_codes_are_the_shared_tables_codes() -> None:
    # The SDK is its own wheel and must not import the servers' packages, so it keeps its
    # own mapping; this proves that mapping and the one table the servers share agree.
    from latchkey_resource.problems import SHARED_CONDITIONS

    assert {c.code for c in SHARED_CONDITIONS} == set(_SHARED_CONDITION_ERRORS)
    for condition in SHARED_CONDITIONS:
        error = error_from_response(problem(condition.status, condition.code))
        assert type(error) is _SHARED_CONDITION_ERRORS[condition.code]
        assert (error.status, error.code) == (condition.status, condition.code)


def test_every_code_the_token_server_answers_with_maps_to_a_typed_error() -> None:
    from latchkey_server.errors import ERROR_CODES

    for code, status in ERROR_CODES.items():
        error = error_from_response(problem(status, code))
        assert type(error) is not ApiError, code
        assert error.code == code
