"""L2 through the examples: idle and absolute expiry, decided on the store's clock, reach
the app as ``SessionExpiredError`` with the reason on the very next call.

A token never outlives its session's idle or absolute end (``ACCESS_TOKEN_TTL`` is at most
the idle timeout, ``exp`` is capped at the absolute end, R3), so past either end the example
answers ``token_expired``; the SDK refreshes once, and Latchkey says why the session is
over. The clients here have a clock that stands still, so the SDK itself never expires the
session locally (which it would do at the absolute end even offline, L6): every decision
is the servers'.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from latchkey_client import LatchkeyClient, SessionExpiredError, SignOutReason

from .conftest import HELLO, Deployment, Deployments

IDLE_SECONDS, ABSOLUTE_SECONDS = 3, 5


@pytest.fixture(scope="module")
def short(deployments: Deployments) -> Deployment:
    return deployments(idle_timeout=IDLE_SECONDS, access_token_ttl=IDLE_SECONDS,
                       absolute_timeout=ABSOLUTE_SECONDS)


@pytest.fixture
def frozen_client(kind: str, short: Deployment) -> Iterator[LatchkeyClient]:
    frozen = time.monotonic()
    client, _ = short.signed_in(kind, clock=lambda: frozen)
    yield client
    client.close()


def test_an_idle_session_is_refused_with_reason_idle(
    kind: str, short: Deployment, frozen_client: LatchkeyClient
) -> None:
    url = short.examples[kind].url(HELLO)
    assert frozen_client.get(url).status_code == 200
    time.sleep(IDLE_SECONDS + 0.4)
    with pytest.raises(SessionExpiredError) as caught:
        frozen_client.get(url)
    assert caught.value.reason == "idle"
    assert frozen_client.signed_out_reason is SignOutReason.IDLE


def test_an_active_session_still_ends_at_its_absolute_limit(
    kind: str, short: Deployment, frozen_client: LatchkeyClient
) -> None:
    url = short.examples[kind].url(HELLO)
    started, served = time.monotonic(), 0
    with pytest.raises(SessionExpiredError) as caught:
        for _ in range(12):  # a call every 0.8 s keeps the session from idling out
            assert frozen_client.get(url).status_code == 200
            served += 1
            time.sleep(0.8)
    assert caught.value.reason == "absolute"
    assert time.monotonic() - started >= ABSOLUTE_SECONDS - 1  # the session's own start
    assert served >= ABSOLUTE_SECONDS  # activity never extended it
    assert frozen_client.signed_out_reason is SignOutReason.ABSOLUTE
