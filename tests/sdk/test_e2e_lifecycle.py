"""Session life on the client (L6, S1) against the real server: logout that survives being
offline, idle and absolute limits enforced locally, and what is (not) kept on disk.

Every test runs on the sync and the async client (the ``sdk`` fixture)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from latchkey_client import (
    EncryptedFileStorage,
    EventName,
    SessionExpiredError,
    SignOutReason,
)

from tests.conftest import ServerProcess

from .conftest import PASSWORD, Sdk, make_user, me_status


def test_offline_logout_is_remembered_in_secure_storage_and_revoked_on_reconnect(
    live_server: ServerProcess, proxy_to: Any, file_store_path: Path, sdk: Sdk
) -> None:
    proxy = proxy_to(live_server)
    key = os.urandom(32)
    path = file_store_path
    user = make_user(live_server)
    phone = sdk(proxy, storage=EncryptedFileStorage(path, key=key))
    phone.login(username=user, password=PASSWORD)
    access = phone._core.tokens.access_token  # white-box: to ask the server about it later
    proxy.go_offline()
    started = time.monotonic()
    result = phone.logout()
    assert time.monotonic() - started < 6  # the short logout timeout, not the default
    assert result.pending and not result.server_confirmed
    assert not phone.is_signed_in and phone._core.tokens.access_token is None
    phone.close()
    # Wiped locally, but the server never heard: the session is still live there.
    assert me_status(live_server, access) == 200
    # The pending revocation is in the encrypted store, not in plaintext.
    assert EncryptedFileStorage(path, key=key).load("refresh_token") is None
    assert len(json.loads(EncryptedFileStorage(path, key=key).load("pending_revocations")))
    # The app restarts later, back online: the first successful connection revokes it.
    proxy.go_online()
    restarted = sdk(proxy, storage=EncryptedFileStorage(path, key=key))
    assert restarted.pending_revocations == 1
    restarted.login(username=user, password=PASSWORD)
    assert restarted.pending_revocations == 0
    assert me_status(live_server, access) == 401
    assert EncryptedFileStorage(path, key=key).load("pending_revocations") is None
    restarted.logout()


def test_refresh_token_is_persisted_only_when_staying_signed_in(
    live_server: ServerProcess, tmp_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    user = make_user(live_server)
    transient = tmp_path / "transient.bin"
    with sdk(live_server, storage=EncryptedFileStorage(transient, key=key)) as client:
        client.login(username=user, password=PASSWORD)
        assert not transient.exists()  # nothing on disk unless asked
        client.logout()
    kept = tmp_path / "kept.bin"
    with sdk(live_server, stay_signed_in=True,
             storage=EncryptedFileStorage(kept, key=key)) as client:
        client.login(username=user, password=PASSWORD)
        tokens = client._core.tokens
        stored = EncryptedFileStorage(kept, key=key)
        assert stored.load("refresh_token") == tokens.refresh_token
        # The access token lives in memory only.
        everything_stored = EncryptedFileStorage(kept, key=key)._read_all()[0].values()
        assert tokens.access_token not in everything_stored
    # A restart resumes the session from secure storage.
    with sdk(live_server, stay_signed_in=True,
             storage=EncryptedFileStorage(kept, key=key)) as again:
        assert again.restore() is not None
        assert again.get("/v1/me").json()["username"] == user
        assert again.logout().server_confirmed
    assert EncryptedFileStorage(kept, key=key).load("refresh_token") is None


@pytest.fixture(scope="module")
def idle_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """Idle limit 2 s on the server, absolute 60 s, access tokens 1 s."""
    return module_server_factory(access_token_ttl=1, idle_timeout=2, absolute_timeout=60)


@pytest.fixture(scope="module")
def absolute_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """Absolute limit 3 s."""
    return module_server_factory(access_token_ttl=1, idle_timeout=3, absolute_timeout=3)


def test_idle_timer_warns_then_signs_out_and_revokes_on_the_server(
    idle_server: ServerProcess, sdk: Sdk
) -> None:
    events: list[tuple[str, Any]] = []
    client = sdk(idle_server, idle_logout=True, idle_timeout_seconds=1.0,
                 idle_warning_seconds=0.5)
    client.on(EventName.IDLE_WARNING, lambda e: events.append(("warn", e.seconds_left)))
    client.on(EventName.SIGNED_OUT, lambda e: events.append(("out", e.reason)))
    client.login(username=make_user(idle_server), password=PASSWORD)
    access = client._core.tokens.access_token
    time.sleep(1.6)
    assert [name for name, _ in events] == ["warn", "out"]
    assert 0 < events[0][1] <= 0.5
    assert events[1][1] is SignOutReason.IDLE
    assert not client.is_signed_in
    assert me_status(idle_server, access) == 401  # the server was told, not just the phone


def test_user_activity_postpones_the_idle_sign_out(idle_server: ServerProcess, sdk: Sdk) -> None:
    client = sdk(idle_server, idle_logout=True, idle_timeout_seconds=1.0,
                 idle_warning_seconds=0.3)
    client.login(username=make_user(idle_server), password=PASSWORD)
    for _ in range(4):
        time.sleep(0.5)
        client.touch()
    assert client.is_signed_in
    left = client.idle_seconds_left()
    assert left is not None and 0.5 < left <= 1.0
    client.logout()


def test_default_idle_timer_follows_the_servers_idle_timeout(
    idle_server: ServerProcess, sdk: Sdk
) -> None:
    client = sdk(idle_server, idle_logout=True)  # no idle_timeout_seconds: the server's
    client.login(username=make_user(idle_server), password=PASSWORD)
    left = client.idle_seconds_left()
    assert left is not None and 1.5 < left <= 2.0
    client.logout()


def test_server_idle_expiry_is_a_typed_error_with_reason_and_wipes_locally(
    idle_server: ServerProcess, sdk: Sdk
) -> None:
    client = sdk(idle_server)
    reasons: list[Any] = []
    client.on(EventName.SIGNED_OUT, lambda e: reasons.append(e.reason))
    client.login(username=make_user(idle_server), password=PASSWORD)
    time.sleep(2.4)
    with pytest.raises(SessionExpiredError) as caught:
        client.get("/v1/me")
    assert caught.value.reason == "idle"
    assert reasons == [SignOutReason.IDLE] and not client.is_signed_in


def test_absolute_expiry_wipes_local_tokens_even_offline(
    absolute_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(absolute_server)
    client = sdk(proxy)
    reasons: list[Any] = []
    client.on(EventName.SIGNED_OUT, lambda e: reasons.append(e.reason))
    client.login(username=make_user(absolute_server), password=PASSWORD)
    proxy.go_offline()
    time.sleep(3.1)
    before = len(proxy.seen)
    with pytest.raises(SessionExpiredError) as caught:
        client.get("/v1/me")
    assert caught.value.reason == "absolute"
    assert len(proxy.seen) == before  # decided on the device, no network needed
    assert reasons == [SignOutReason.ABSOLUTE] and client._core.tokens.access_token is None
