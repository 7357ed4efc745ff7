"""A small app written against the SDK's public API, the way a user's typed project uses it.

It is never run: ``test_wheels.py`` type-checks it with ``mypy --strict`` against a fresh
venv that holds only the installed wheels, so the SDK is seen exactly as a user's checker
sees it, through the wheel's ``py.typed``. Every public call's result and every public
attribute it reads is pinned with ``assert_type``, which accepts no ``Any``: a method that
lost its annotations, a return type that became ``Any`` or a wrong one fails the check,
and a wheel without ``py.typed`` fails it at the first import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import assert_type

import httpx
import latchkey_client
from latchkey_client import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT_SECONDS,
    LOGOUT_TIMEOUT,
    AndroidKeystoreStorage,
    ApiError,
    AsyncLatchkeyClient,
    AuthEvent,
    EncryptedFileStorage,
    EventName,
    InvalidCredentialsError,
    IOSKeychainStorage,
    KeyringStorage,
    LatchkeyAuth,
    LatchkeyClient,
    LatchkeyError,
    LogoutResult,
    MemoryStorage,
    NetworkError,
    RateLimitedError,
    RemoteSession,
    SessionEndedError,
    SessionInfo,
    SignOutReason,
    StepUpRequiredError,
    Storage,
    StorageLost,
    StorageUnavailable,
    TokenRedactingFilter,
    install_redaction,
    redact,
    spki_sha256,
)


class DictStorage(Storage):
    """An app's own storage back end: the interface is small enough to implement."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def load(self, key: str) -> str | None:
        return self.values.get(key)

    def save(self, key: str, value: str) -> None:
        self.values[key] = value

    def clear(self, key: str) -> None:
        self.values.pop(key, None)


def pick_storage(platform: str, home: Path) -> Storage:
    """Choose a back end per platform, as docs/SDK.md suggests."""
    if platform == "android":
        return AndroidKeystoreStorage(alias="app")
    if platform == "ios":
        return IOSKeychainStorage(service="app")
    if platform == "desktop":
        return KeyringStorage(service="app", lock_path=home / "app.lock")
    if platform == "headless":
        return EncryptedFileStorage(home / "tokens.bin", passphrase="from the user")
    if platform == "custom":
        return DictStorage()
    return MemoryStorage()


def on_event(event: AuthEvent) -> None:
    """A listener: every field of the event is typed."""
    assert_type(event.name, EventName)
    assert_type(event.reason, SignOutReason | None)
    assert_type(event.seconds_left, float | None)
    assert_type(event.session, SessionInfo | None)
    if event.name is EventName.SIGNED_OUT and event.reason is SignOutReason.REUSE:
        logging.getLogger("app").warning("signed out: the session may have been stolen")


def show_session(info: SessionInfo) -> str:
    assert_type(info.session_id, str)
    assert_type(info.auth_level, str)
    assert_type(info.idle_timeout_seconds, float)
    assert_type(info.access_expires_in_seconds, float)
    assert_type(info.absolute_expires_in_seconds, float | None)
    return f"{info.auth_level}, idle after {info.idle_timeout_seconds:.0f} s"


def show_devices(sessions: list[RemoteSession]) -> list[str]:
    lines: list[str] = []
    for s in sessions:
        assert_type(s.session_id, str)
        assert_type(s.device_name, str | None)
        assert_type(s.user_agent, str | None)
        assert_type(s.ip, str | None)
        assert_type(s.created_at, datetime | None)
        assert_type(s.last_seen_at, datetime | None)
        assert_type(s.expires_at, datetime | None)
        assert_type(s.current, bool)
        lines.append(f"{s.device_name or '?'} ({s.auth_level}){' *' if s.current else ''}")
    return lines


def explain(error: LatchkeyError) -> str:
    """Map the SDK's exception tree onto what the app tells the user."""
    assert_type(error.retryable, bool)
    if isinstance(error, RateLimitedError):
        assert_type(error.retry_after_seconds, float | None)
        return "too many attempts"
    if isinstance(error, SessionEndedError):
        assert_type(error.reason, str | None)
        return "please sign in again"
    if isinstance(error, ApiError):
        assert_type(error.status, int)
        assert_type(error.code, str)
        assert_type(error.detail, str | None)
        return error.detail or error.code
    if isinstance(error, StorageUnavailable | NetworkError):
        return "try again later"
    if isinstance(error, StorageLost):
        return "please sign in again"
    return str(error)


def sync_app(base_url: str, platform: str, home: Path) -> None:
    """Sign in, call the app's API, list devices, step up, sign out: the blocking client."""
    client = LatchkeyClient(base_url=base_url, storage=pick_storage(platform, home),
                            stay_signed_in=True, timeout=DEFAULT_TIMEOUT,
                            total_timeout_seconds=DEFAULT_TOTAL_TIMEOUT_SECONDS,
                            idle_timeout_seconds=900.0, device_name="Ada's phone")
    unsubscribe = client.on(EventName.SIGNED_OUT, on_event)
    assert_type(unsubscribe, Callable[[], None])
    with client:
        assert_type(client.base_url, httpx.URL)
        assert_type(client.is_signed_in, bool)
        assert_type(client.session, SessionInfo | None)
        assert_type(client.pending_revocations, int)
        assert_type(client.restore(), SessionInfo | None)
        try:
            assert_type(client.register(username="ada", password="correct horse"), str)
            info = client.login(username="ada", password="correct horse")
        except InvalidCredentialsError:
            return
        show_session(assert_type(info, SessionInfo))
        response = client.get("/v1/me")
        assert_type(response, httpx.Response)
        assert_type(response.status_code, int)
        assert_type(client.post("/v1/notes", json={"text": "hi"}, idempotent=True),
                    httpx.Response)
        assert_type(client.put("/v1/notes/1", json={"text": "hi"}), httpx.Response)
        assert_type(client.delete("/v1/notes/1"), httpx.Response)
        assert_type(client.request("PATCH", "/v1/notes/1", idempotent=False), httpx.Response)
        show_devices(assert_type(client.sessions(), list[RemoteSession]))
        try:
            client.delete("/v1/account")
        except StepUpRequiredError:
            assert_type(client.reauthenticate(password="correct horse"), SessionInfo)
        assert_type(client.change_password(current_password="correct horse",
                                           new_password="battery staple"), SessionInfo)
        client.touch()
        assert_type(client.idle_seconds_left(), float | None)
        assert_type(client.revoke_session("s-other"), None)
        assert_type(client.logout_all(scope="others"), None)
        # The session's own httpx.Auth, for the app's own httpx client.
        auth = assert_type(client.auth, LatchkeyAuth)
        with httpx.Client(base_url=base_url, auth=auth, timeout=LOGOUT_TIMEOUT) as own:
            assert_type(own.get("/v1/me"), httpx.Response)
        result = assert_type(client.logout(), LogoutResult)
        assert_type(result.server_confirmed, bool)
        assert_type(result.pending, bool)
        assert_type(client.flush_pending_revocations(), int)
    unsubscribe()


async def async_app(base_url: str) -> None:
    """The same with the asyncio client."""
    async with AsyncLatchkeyClient(base_url=base_url) as client:
        client.on("refreshed", on_event)
        assert_type(await client.register(username="ada", password="correct horse"), str)
        assert_type(await client.login(username="ada", password="correct horse"), SessionInfo)
        assert_type(await client.restore(), SessionInfo | None)
        assert_type(await client.get("/v1/me"), httpx.Response)
        assert_type(await client.post("/v1/notes", json={}), httpx.Response)
        assert_type(await client.sessions(), list[RemoteSession])
        assert_type(await client.reauthenticate(password="correct horse"), SessionInfo)
        assert_type(await client.logout(), LogoutResult)
        assert_type(await client.flush_pending_revocations(), int)
    await client.aclose()


def housekeeping(cert_der: bytes) -> None:
    """The helpers around the clients."""
    assert_type(latchkey_client.__version__, str)
    assert_type(redact("Authorization: Bearer x"), str)
    assert_type(install_redaction(logging.getLogger("app")), TokenRedactingFilter)
    assert_type(spki_sha256(cert_der), str)
    assert_type(DEFAULT_TIMEOUT, httpx.Timeout)
    assert_type(DEFAULT_TOTAL_TIMEOUT_SECONDS, float)
