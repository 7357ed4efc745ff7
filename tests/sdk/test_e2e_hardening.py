"""The SDK edge cases an attack review found (issue 13), against the real server on loopback.

Each test here failed on the SDK before its fix: a hanging refresh outlived the call's total
deadline; ``Retry-After`` was ignored on 502/503/504; a ``signed_out`` listener that closed
the client lost the logout's revocation; a refresh the server never received was replayed
for 20 s; a non-ASCII device id crashed the constructor. A loopback proxy in front of the
real server plays the network (a stall, a refused connection) and the load balancer (a
canned 502/503/504); every test runs on the sync and the async client (the ``sdk`` fixture).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from latchkey_client import (
    ConfigurationError,
    EncryptedFileStorage,
    EventName,
    MemoryStorage,
    NetworkError,
    NetworkTimeoutError,
    ServerError,
    transport,
)
from latchkey_server.api.inputs import MAX_DEVICE_FIELD
from latchkey_server.binding import DEVICE_ID_PATTERN, DEVICE_ID_RE

from tests.conftest import Api, ServerProcess

from .conftest import PASSWORD, Sdk, SdkClient, make_user, me_status

ME = "/v1/me"
REFRESH = "/v1/auth/refresh"


@pytest.fixture(scope="module")
def hard_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """2 s access tokens (a refresh is due after 1 s), and device binding enforced."""
    return module_server_factory(access_token_ttl=2, binding_policy="enforce")


def signed_in(sdk: Sdk, via: Any, server: ServerProcess, **options: Any) -> SdkClient:
    client = sdk(via, **options)
    client.login(username=make_user(server), password=PASSWORD)
    return client



# -- 1. the total deadline covers the refresh and its replay --------------------------------

def test_a_refresh_that_hangs_ends_within_the_calls_total_deadline(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server, total_timeout_seconds=3)
    kept = client._core.tokens.refresh_token  # white-box: the token must survive the hang
    time.sleep(2.1)  # the access token has expired: the next call must refresh first
    proxy.stall = True  # every request now hangs unanswered, the refresh included
    started = time.monotonic()
    with pytest.raises(NetworkTimeoutError):
        client.get(ME)
    assert time.monotonic() - started < 3 + 1.0  # 3 s and scheduling slack, not 20 s
    assert proxy.count(REFRESH) >= 1 and proxy.count(ME) == 0  # gave up before sending it
    # The outcome of the hung refresh is unknown, so its token is kept, and it still works.
    assert client.is_signed_in and client._core.tokens.refresh_token == kept
    proxy.stall = False
    assert client.get(ME).status_code == 200
    assert client.logout().server_confirmed


# -- 2. Retry-After on 502/503/504 ----------------------------------------------------------

@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_error_with_retry_after_is_retried_no_sooner_than_it_asks(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk, status: int
) -> None:
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server)
    proxy.canned[ME] = [(status, {"Retry-After": "1"})]
    started = time.monotonic()
    assert client.get(ME).status_code == 200
    assert time.monotonic() - started >= 1.0
    assert [s.response_status for s in proxy.requests(ME)] == [status, 200]
    assert client.logout().server_confirmed


def test_a_refresh_answered_503_with_retry_after_is_replayed_no_sooner_than_it_asks(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server)
    proxy.canned[REFRESH] = [(503, {"Retry-After": "1"})]
    started = time.monotonic()
    client.refresh_now()
    assert time.monotonic() - started >= 1.0
    assert [s.response_status for s in proxy.requests(REFRESH)] == [503, 200]
    assert client.get(ME).status_code == 200
    assert client.logout().server_confirmed


def test_a_retry_after_beyond_the_deadline_fails_at_once_instead_of_waiting(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server, total_timeout_seconds=2)
    proxy.canned[ME] = [(503, {"Retry-After": "60"})]
    started = time.monotonic()
    with pytest.raises(ServerError) as caught:
        client.get(ME)
    assert caught.value.status == 503
    assert time.monotonic() - started < 1.5  # not waiting out the 2 s either
    assert proxy.count(ME) == 1  # asked to wait a minute: no retry within 2 s
    assert client.logout().server_confirmed


# -- 3. the revocation intent is recorded before anything the app can observe ---------------
# A sync listener's close() takes effect at once, so the revocation meets a closed client
# and stays pending; an asyncio listener can only schedule aclose(), and the revocation may
# still go out first. Either way exactly one holds: the server confirmed, or the revocation
# is on record for the next client, and it was on record before the app heard anything.

def session_dies(server: ServerProcess, access_token: str | None) -> bool:
    """Wait (briefly: a revocation may be in flight) for the server to refuse the token."""
    deadline = time.monotonic() + 5
    while me_status(server, access_token) == 200:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_listener_that_closes_the_client_at_sign_out_cannot_lose_the_revocation(
    live_server: ServerProcess, file_store_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    client = signed_in(sdk, live_server, live_server,
                       storage=EncryptedFileStorage(file_store_path, key=key))
    access = client._core.tokens.access_token  # white-box: to ask the server about it
    on_record_when_told: list[int] = []

    def close_at_sign_out(event: Any) -> None:
        on_record_when_told.append(client.pending_revocations)
        client.close_from_listener()

    client.on(EventName.SIGNED_OUT, close_at_sign_out)
    result = client.logout()
    assert on_record_when_told == [1]
    assert not client.is_signed_in
    assert result.pending != result.server_confirmed
    if client.kind == "sync":
        assert result.pending and me_status(live_server, access) == 200  # not sent yet
    # The next client on the same storage sends what is still pending.
    after = sdk(live_server, storage=EncryptedFileStorage(file_store_path, key=key))
    assert after.pending_revocations == (1 if result.pending else 0)
    assert after.flush_pending_revocations() == 0
    assert session_dies(live_server, access)
    assert EncryptedFileStorage(file_store_path, key=key).load("pending_revocations") is None


def test_an_idle_sign_out_whose_listener_closes_the_client_cannot_lose_the_revocation(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    storage = MemoryStorage()  # shared by the two clients, as one process's store is
    client = signed_in(sdk, live_server, live_server, storage=storage, idle_logout=True,
                       idle_timeout_seconds=0.5, idle_warning_seconds=0.1)
    access = client._core.tokens.access_token
    told: list[tuple[str, int]] = []

    def close_at_sign_out(event: Any) -> None:
        told.append((event.reason.value, client.pending_revocations))
        client.close_from_listener()

    client.on(EventName.SIGNED_OUT, close_at_sign_out)
    deadline = time.monotonic() + 5
    while not told:
        assert time.monotonic() < deadline, "the idle timer did not sign out"
        time.sleep(0.05)
    assert told == [("idle", 1)]
    assert not client.is_signed_in
    time.sleep(0.3)  # let the idle sign-out's own attempt end, whichever way it goes
    sdk(live_server, storage=storage).flush_pending_revocations()
    assert session_dies(live_server, access)
    assert storage.load("pending_revocations") is None


# -- 4. a refresh that certainly never reached the server is not replayed -------------------

def test_a_refresh_on_a_refused_connection_fails_fast_and_keeps_the_session(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server)
    kept = client._core.tokens.refresh_token
    time.sleep(2.1)  # expired: the next call must refresh
    proxy.go_offline()
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        client.get(ME)
    assert time.monotonic() - started < 5.0  # slack for a loaded machine; not a 20 s replay
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert client.auth.refresh_requests == 1
    # Network loss never signs out: back online, the same token refreshes.
    assert client.is_signed_in and client._core.tokens.refresh_token == kept
    proxy.go_online()
    assert client.get(ME).status_code == 200
    assert client.logout().server_confirmed


def test_a_refresh_whose_host_does_not_resolve_fails_fast_and_keeps_the_session(
    hard_server: ServerProcess, sdk: Sdk
) -> None:
    # A real session's refresh token, stored as a restarted app would find it.
    doc = Api(hard_server.base_url).login(make_user(hard_server))
    storage = MemoryStorage()
    storage.save("refresh_token", doc["refresh_token"])
    client = sdk("https://latchkey.invalid", storage=storage, stay_signed_in=True)
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        client.restore()
    assert time.monotonic() - started < 5.0  # one failed lookup, not a 20 s replay
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert client.auth.refresh_requests == 1
    assert client.is_signed_in and storage.load("refresh_token") == doc["refresh_token"]


# -- 5. one definition of a device id, the server's -----------------------------------------

def test_a_device_id_no_header_can_carry_is_a_configuration_error_at_construction(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(hard_server)
    for bad in ("Téléphone-1", "x" * (MAX_DEVICE_FIELD + 1), "tab\there", "new\nline"):
        with pytest.raises(ConfigurationError) as caught:
            sdk(proxy, device_id=bad)
        assert "device_id must be printable ASCII" in str(caught.value)
    with pytest.raises(ConfigurationError):
        sdk(proxy, user_agent="Téléphone/1.0")
    assert proxy.seen == []  # refused before anything was sent


def test_the_longest_device_id_the_rule_admits_stays_bound_through_refreshes(
    hard_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    every_printable = "".join(map(chr, range(0x20, 0x7F)))
    device_id = ("id" + every_printable * 2)[: MAX_DEVICE_FIELD - 1] + "~"
    proxy = proxy_to(hard_server)
    client = signed_in(sdk, proxy, hard_server, device_id=device_id)
    assert client.get(ME).status_code == 200
    client.refresh_now()  # under enforce, a binding mismatch here would end the session
    assert client.get(ME).status_code == 200
    assert {s.headers.get("x-device-id") for s in proxy.seen} == {device_id}
    assert client.logout().server_confirmed


def test_the_sdks_device_id_rule_is_the_servers() -> None:
    assert transport.DEVICE_ID_PATTERN == DEVICE_ID_PATTERN
    assert transport.MAX_DEVICE_ID_LENGTH == MAX_DEVICE_FIELD
    samples = [chr(c) for c in range(0x250)] + [
        "", "Téléphone-1", "phone-1", "x" * MAX_DEVICE_FIELD, "x" * (MAX_DEVICE_FIELD + 1),
        "id\n", "\udcff", "a b~c",
    ]
    for value in samples:
        try:
            transport.check_device_id(value)
            sdk_admits = True
        except ConfigurationError:
            sdk_admits = False
        assert sdk_admits == bool(DEVICE_ID_RE.fullmatch(value)), repr(value)


def test_every_device_id_the_rule_admits_can_travel_in_a_header() -> None:
    for value in (" phone", "phone ", " "):
        try:
            transport.check_device_id(value)
        except ConfigurationError:
            continue
        h11.Connection(h11.CLIENT).send(h11.Request(
            method="GET", target="/", headers=[("Host", "x"), ("X-Device-Id", value)]))
    # Spaces inside an id are fine, and every admitted id goes out unchanged.
    for value in ("ph one", "a", "~", "x" * transport.MAX_DEVICE_ID_LENGTH):
        transport.check_device_id(value)
        h11.Connection(h11.CLIENT).send(h11.Request(
            method="GET", target="/", headers=[("Host", "x"), ("X-Device-Id", value)]))
