"""The phone's life cycle (M3) against the real server: pause, sleep, resume, offline.

``on_resume`` must check the session before the first request (refreshing a due access
token then, not after a 401), count the time the device slept although ``time.monotonic``
stood still, sign out with reason ``idle`` (revoking on the server) when the idle limit
passed while away, and never sign out for a lost network. Every test runs on the sync and
the async client.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from latchkey_client import EventName, LatchkeyError, SignOutReason

from tests.conftest import ServerProcess

from .conftest import PASSWORD, Sdk, SdkClient, make_user, me_status

REFRESH = "/v1/auth/refresh"


class SuspendableClock:
    """Two clocks as a phone has them: ``monotonic`` stops while ``suspended``, ``boot``
    (``CLOCK_BOOTTIME``) never does. Real seconds pass in between."""

    def __init__(self) -> None:
        self._missed = 0.0
        self._suspended_at: float | None = None

    def boot(self) -> float:
        return time.monotonic()

    def monotonic(self) -> float:
        if self._suspended_at is not None:
            return self._suspended_at - self._missed
        return time.monotonic() - self._missed

    def suspend(self) -> None:
        self._suspended_at = time.monotonic()

    def wake(self) -> None:
        assert self._suspended_at is not None
        self._missed += time.monotonic() - self._suspended_at
        self._suspended_at = None


def signed_in(sdk: Sdk, target: Any, server: ServerProcess, **options: Any) -> SdkClient:
    client = sdk(target, **options)
    client.login(username=make_user(server), password=PASSWORD)
    return client


def statuses(proxy: Any, path: str) -> list[int | None]:
    return [s.response_status for s in proxy.seen if s.path == path]


def test_resume_refreshes_a_due_access_token_before_the_first_request(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    phone = signed_in(sdk, proxy, short_ttl_server)
    phone.on_pause()
    time.sleep(2.2)  # the 2 s access token expired while in the background
    assert proxy.count(REFRESH) == 0  # nothing ran while paused
    assert phone.on_resume() is not None
    assert proxy.count(REFRESH) == 1  # checked on resume, before any request
    assert phone.get("/v1/me").status_code == 200
    assert statuses(proxy, "/v1/me") == [200]  # the first request was fresh: no 401
    assert proxy.count(REFRESH) == 1


def test_sleep_that_the_monotonic_clock_missed_is_counted_on_resume(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    clock = SuspendableClock()
    phone = signed_in(sdk, proxy, short_ttl_server, clock=clock.monotonic)
    phone._core.sleep_clock = clock.boot  # the injected clock's CLOCK_BOOTTIME
    phone.on_pause()
    clock.suspend()
    time.sleep(2.2)  # asleep: to time.monotonic no time passed at all
    clock.wake()
    phone.on_resume()
    assert proxy.count(REFRESH) == 1  # the token was known to be expired
    assert phone.get("/v1/me").status_code == 200
    assert statuses(proxy, "/v1/me") == [200]


@pytest.fixture(scope="module")
def idle_server(module_server_factory: Any) -> ServerProcess:
    """Idle limit and access tokens 30 s on the server; the client's own limit is per test."""
    return module_server_factory(access_token_ttl=30, idle_timeout=30)


def test_idle_limit_passed_while_paused_signs_out_on_resume_with_reason_idle_and_revokes(
    idle_server: ServerProcess, sdk: Sdk
) -> None:
    phone = signed_in(sdk, idle_server, idle_server, idle_logout=True,
                      idle_timeout_seconds=1.5, idle_warning_seconds=0.5)
    reasons: list[SignOutReason | None] = []
    phone.on(EventName.SIGNED_OUT, lambda e: reasons.append(e.reason))
    access = phone._core.tokens.access_token
    phone.on_pause()
    time.sleep(2.0)
    assert phone.is_signed_in and reasons == []  # the timer held while in the background
    assert phone.on_resume() is None
    assert reasons == [SignOutReason.IDLE] and not phone.is_signed_in
    assert phone.signed_out_reason is SignOutReason.IDLE
    assert me_status(idle_server, access) == 401  # revoked on the server, not only here


def test_resume_within_the_idle_limit_keeps_the_session_and_the_timer_running(
    idle_server: ServerProcess, sdk: Sdk
) -> None:
    phone = signed_in(sdk, idle_server, idle_server, idle_logout=True,
                      idle_timeout_seconds=2.0, idle_warning_seconds=0.5)
    access = phone._core.tokens.access_token
    phone.on_pause()
    time.sleep(0.5)
    assert phone.on_resume() is not None
    left = phone.idle_seconds_left()
    assert left is not None and left < 1.6  # the time away counted as idle
    deadline = time.monotonic() + 5
    while me_status(idle_server, access) != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert phone.signed_out_reason is SignOutReason.IDLE  # the timer resumed and fired
    assert me_status(idle_server, access) == 401


def test_network_loss_on_resume_never_signs_out(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    phone = signed_in(sdk, proxy, short_ttl_server)
    reasons: list[Any] = []
    phone.on(EventName.SIGNED_OUT, lambda e: reasons.append(e.reason))
    phone.on_pause()
    proxy.go_offline()
    time.sleep(2.2)
    assert phone.on_resume() is not None  # no exception, session kept
    assert phone.is_signed_in and reasons == []
    proxy.go_online()
    assert phone.get("/v1/me").status_code == 200  # refreshed now that it can
    assert reasons == []
    assert phone.logout().server_confirmed


def test_a_logout_while_a_refresh_is_in_flight_is_not_undone_by_its_answer(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    """The idle sign-out on resume can race a refresh another call started: the refresh's
    late answer must not bring the session back on the device."""
    proxy = proxy_to(short_ttl_server, delay_rate=1.0, delay_seconds=(1.5, 1.5),
                     chaos_paths=frozenset({REFRESH}))
    phone = signed_in(sdk, proxy, short_ttl_server)
    outcome: list[str] = []

    def refresh() -> None:
        try:
            phone.refresh_now()
        except LatchkeyError as exc:
            outcome.append(type(exc).__name__)
        else:
            outcome.append("refreshed")

    racer = threading.Thread(target=refresh)
    racer.start()
    time.sleep(0.5)  # the server has rotated; its answer is still on the way
    phone.logout()
    racer.join(timeout=10)
    assert outcome == ["NotSignedInError"]
    assert not phone.is_signed_in and phone.signed_out_reason is SignOutReason.USER
    assert phone.flush_pending_revocations() == 0  # the successor was sent for revocation
