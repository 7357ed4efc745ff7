"""The demo's words for sign-out reasons and errors are plain, complete and token-free."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from latchkey_client import (
    DPoPKeyLostError,
    DPoPKeyUnavailableError,
    DPoPProofRefusedError,
    InvalidCredentialsError,
    NetworkError,
    RateLimitedError,
    SessionRevokedError,
    SignOutReason,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demo_app"))

from latchkey_demo.wording import (
    describe_error,
    device_key_status,
    fingerprint,
    format_countdown,
    format_relative,
    sign_out_message,
)


@pytest.mark.parametrize("reason", list(SignOutReason))
def test_every_sign_out_reason_has_its_own_sentence(reason: SignOutReason) -> None:
    words = sign_out_message(reason)
    assert words.endswith(".") and "_" not in words
    others = {sign_out_message(r) for r in SignOutReason if r is not reason}
    assert words not in others


def test_unknown_reason_still_says_something() -> None:
    assert sign_out_message("something_new") == "You were signed out. Please sign in again."


def test_errors_become_advice_without_codes() -> None:
    assert describe_error(InvalidCredentialsError(status=401, code="invalid_credentials")) == (
        "That username and password don't match.")
    assert describe_error(RateLimitedError(retry_after_seconds=4.2, status=429)) == (
        "Too many attempts. Try again in 5 seconds.")
    assert "connection" in describe_error(NetworkError("x"))
    assert "sign in again" in describe_error(SessionRevokedError(reason="remote"))
    assert describe_error(ValueError("eyJhbGciOi.secret")) == (
        "Something unexpected went wrong. Please try again.")


def test_fingerprint_is_short_stable_and_not_the_id() -> None:
    sid = "s" * 43
    assert fingerprint(sid) == fingerprint(sid) != fingerprint(sid + "x")
    assert len(fingerprint(sid)) == 9 and "s" * 4 not in fingerprint(sid)
    assert fingerprint(None) == "—"


def test_countdown_and_relative_times_read_naturally() -> None:
    assert format_countdown(59.2) == "1:00"
    assert format_countdown(3) == "0:03"
    assert format_countdown(3725) == "1:02:05"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert format_relative(now - timedelta(seconds=10), now) == "just now"
    assert format_relative(now - timedelta(minutes=5), now) == "5 min ago"
    assert format_relative(now - timedelta(days=1), now) == "1 day ago"


def test_device_key_status_says_who_holds_the_key_and_dpop_errors_give_advice() -> None:
    assert device_key_status(True, "Android Keystore") == (
        "This device holds its key (Android Keystore)")
    assert device_key_status(False, "Android Keystore") == "Not bound to a device key"
    assert "still signed in" in describe_error(DPoPKeyUnavailableError("locked"))
    assert "sign in again" in describe_error(DPoPKeyLostError("gone"))
    refused = DPoPProofRefusedError(status=400, code="invalid_dpop_proof")
    assert "invalid_dpop_proof" not in describe_error(refused)
    assert describe_error(refused) != describe_error(DPoPKeyLostError("gone"))
