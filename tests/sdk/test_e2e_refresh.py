"""Refresh that never logs a user out by accident (S3, L3), against the real server.

The server issues 2-second access tokens here. A loopback proxy in front of it counts
refresh requests and, where a test asks, drops a refresh response after the server has
processed it, the lost-response case of a flaky mobile network. Every test runs on the
sync and the async client (the ``sdk`` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from latchkey_client import (
    EncryptedFileStorage,
    EventName,
    SessionRevokedError,
    SignOutReason,
)

from tests.conftest import ServerProcess

from .conftest import PASSWORD, Sdk, SdkClient, make_user

REFRESH = "/v1/auth/refresh"


@pytest.fixture(scope="module")
def grace1_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """2 s access tokens and a 1 s reuse grace window, so reuse is reachable quickly."""
    return module_server_factory(access_token_ttl=2, refresh_reuse_grace=1)


def signed_in(sdk: Sdk, proxy: Any, server: ServerProcess, **kw: Any) -> SdkClient:
    client = sdk(proxy, **kw)
    client.login(username=make_user(server), password=PASSWORD)
    return client


def test_refreshes_ahead_of_expiry_on_the_monotonic_clock(
    short_ttl_server: ServerProcess, proxy_to: Any, monkeypatch: pytest.MonkeyPatch, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    with signed_in(sdk, proxy, short_ttl_server) as client:
        refreshed: list[str] = []
        client.on(EventName.REFRESHED, lambda e: refreshed.append("x"))
        # Move the device's wall clock a day either way: nothing the SDK does changes.
        real_time = time.time
        for shift in (86400.0, -86400.0):
            monkeypatch.setattr(time, "time", lambda s=shift: real_time() + s)
            assert client.get("/v1/me").status_code == 200
        monkeypatch.undo()
        assert proxy.count(REFRESH) == 0
        time.sleep(1.1)  # past the refresh point (half of 2 s), before the 2 s expiry
        assert client.get("/v1/me").status_code == 200
        assert proxy.count(REFRESH) == 1 and refreshed == ["x"]
        # The call after the refresh carried the new token and no 401 happened on the way.
        assert [s.response_status for s in proxy.requests("/v1/me")] == [200, 200, 200]
        client.logout()


def test_one_token_expired_401_refreshes_once_and_resends(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    frozen = time.monotonic()
    # A client whose clock stands still believes its token is fresh: only the server's 401
    # token_expired can tell it otherwise.
    with signed_in(sdk, proxy, short_ttl_server, clock=lambda: frozen) as client:
        time.sleep(2.2)
        assert client.get("/v1/me").status_code == 200
        statuses = [s.response_status for s in proxy.requests("/v1/me")]
        assert statuses == [401, 200]
        assert proxy.count(REFRESH) == 1
        client.logout()


def test_concurrent_calls_at_expiry_cause_exactly_one_refresh(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    """16 callers at once: threads of the sync client, tasks on the async client's loop."""
    proxy = proxy_to(short_ttl_server)
    with signed_in(sdk, proxy, short_ttl_server) as client:
        time.sleep(2.1)  # the access token has expired
        barrier = threading.Barrier(16)
        results: list[int] = []

        def call() -> None:
            barrier.wait()
            results.append(client.get("/v1/me").status_code)

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 16
        assert proxy.count(REFRESH) == 1
        assert client.auth.refresh_requests == 1
        client.logout()


def test_lost_refresh_response_is_replayed_and_the_user_stays_signed_in(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    with signed_in(sdk, proxy, short_ttl_server) as client:
        signed_out: list[Any] = []
        client.on(EventName.SIGNED_OUT, signed_out.append)
        time.sleep(2.1)
        proxy.drop_responses[REFRESH] = 1
        assert client.get("/v1/me").status_code == 200
        first, replay = proxy.requests(REFRESH)
        # The same refresh token went out twice; the server rotated on the first (whose
        # answer was lost) and gave the same successor again inside its grace window.
        assert first.dropped and first.response_status == 200
        assert first.json()["refresh_token"] == replay.json()["refresh_token"]
        lost = json.loads(first.response_body)
        got = json.loads(replay.response_body)
        assert lost["refresh_token"] == got["refresh_token"]
        assert lost["session_id"] == got["session_id"]
        # Still signed in, with the successor: later calls and refreshes keep working.
        time.sleep(2.1)
        assert client.get("/v1/me").status_code == 200
        assert proxy.requests(REFRESH)[-1].json()["refresh_token"] == got["refresh_token"]
        assert signed_out == []
        assert client.logout().server_confirmed


def test_reuse_of_a_rotated_token_after_the_grace_window_signs_out_with_reason_reuse(
    grace1_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(grace1_server)
    with signed_in(sdk, proxy, grace1_server) as client:
        reasons: list[Any] = []
        client.on(EventName.SIGNED_OUT, lambda e: reasons.append(e.reason))
        stolen = client._core.tokens.refresh_token  # white-box: play the thief
        r = httpx.post(grace1_server.base_url + REFRESH, json={"refresh_token": stolen})
        assert r.status_code == 200
        time.sleep(2.2)  # grace over, access token expired: the client must refresh
        with pytest.raises(SessionRevokedError) as caught:
            client.get("/v1/me")
        assert caught.value.reason == "reuse"
        assert reasons == [SignOutReason.REUSE] and not client.is_signed_in
        # Theft detection ended the whole session: the thief's successor is dead too.
        thief = r.json()["access_token"]
        me = httpx.get(grace1_server.base_url + "/v1/me",
                       headers={"Authorization": f"Bearer {thief}"})
        assert me.status_code == 401


def test_processes_sharing_a_store_refresh_one_at_a_time_never_presenting_a_stale_token(
    grace1_server: ServerProcess, proxy_to: Any, tmp_path: Path, sdk: Sdk
) -> None:
    """The parent is the client under test; the four workers are sync clients in their own
    processes (``process_worker.py``), as other processes of the app would be."""
    proxy = proxy_to(grace1_server)
    key = os.urandom(32)
    store_path = tmp_path / "shared-tokens.bin"
    parent = signed_in(sdk, proxy, grace1_server,
                       storage=EncryptedFileStorage(store_path, key=key), stay_signed_in=True)
    first_token = parent._core.tokens.refresh_token
    worker = Path(__file__).with_name("process_worker.py")
    go = tmp_path / "go"
    procs = []
    for i in range(4):
        ready = tmp_path / f"ready-{i}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, str(worker), proxy.base_url, str(store_path), key.hex(),
             str(ready), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).parents[2],
        )))
    deadline = time.monotonic() + 30
    while not all(ready.exists() for ready, _ in procs):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    # Every worker now holds the first refresh token in memory. Rotate it and let the grace
    # window pass: presenting it again would now be reuse and end the session.
    parent.refresh_now()
    time.sleep(1.3)
    go.touch()
    reports = []
    for _, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["ok"] for r in reports] == [3, 3, 3, 3], reports
    assert [r["refreshes"] for r in reports] == [1, 1, 1, 1]
    presented = [s.json()["refresh_token"] for s in proxy.requests(REFRESH)]
    assert len(presented) == 5  # the parent's rotation, then one per process
    assert len(set(presented)) == 5  # no refresh token was ever presented twice
    assert presented.count(first_token) == 1
    assert all(s.response_status == 200 for s in proxy.requests(REFRESH))
    # The session survived: the parent, holding a stale token too, re-reads the store.
    time.sleep(2.1)
    assert parent.get("/v1/me").status_code == 200
    assert parent.logout().server_confirmed


@pytest.fixture(scope="module")
def enforce_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """2 s access tokens (due at 1 s), and a device or User-Agent change ends the session."""
    return module_server_factory(access_token_ttl=2, binding_policy="enforce")


def test_device_bound_session_survives_refreshes_under_enforce_binding(
    enforce_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(enforce_server)
    with signed_in(sdk, proxy, enforce_server, device_id="device-1234") as client:
        time.sleep(1.1)
        assert client.get("/v1/me").status_code == 200  # after a refresh
        # An app's own httpx client with the SDK's auth carries the device id too.
        assert client.app_get(proxy.base_url + "/v1/me").status_code == 200
        assert proxy.count(REFRESH) == 1
        assert all(s.headers.get("x-device-id") == "device-1234" for s in proxy.seen)
        assert client.logout().server_confirmed
