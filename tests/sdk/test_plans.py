"""The SDK's decisions, read straight off its sans-I/O plans (S3, L3, L6).

A plan yields the I/O it needs and is sent the outcome, so a test can walk one by hand:
which step comes next for a given answer is the decision itself, with no network and no
sleeping. The end-to-end tests (``test_e2e_*.py``) prove the same rules against the real
server through both drivers; these pin down the branches a real server seldom takes on cue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from latchkey_client import (
    ClientClosedError,
    EventName,
    LatchkeyClient,
    MemoryStorage,
    NetworkError,
    NetworkTimeoutError,
    SessionExpiredError,
    SignOutReason,
)
from latchkey_client._steps import Plan, Send, Sleep
from latchkey_client._timing import Deadline
from latchkey_client.dpop_flow import ProofAuth

BASE = "http://127.0.0.1:9"  # never contacted: nothing here performs a step


@pytest.fixture
def client() -> Iterator[LatchkeyClient]:
    with LatchkeyClient(base_url=BASE, idle_logout=False) as c:
        yield c


def answer(step: Send, status: int, **kwargs: Any) -> httpx.Response:
    """The response a server would give to ``step``."""
    return httpx.Response(status, request=httpx.Request(step.method, step.url), **kwargs)


def finish(plan: Plan[Any], outcome: Any) -> Any:
    """Send the last outcome and return the plan's result."""
    with pytest.raises(StopIteration) as done:
        plan.send(outcome)
    return done.value.value


def test_a_post_that_never_reached_the_server_is_retried_after_a_backoff(
    client: LatchkeyClient,
) -> None:
    plan = client._send_plan("POST", "v1/items", authenticated=False)
    first = next(plan)
    assert isinstance(first, Send) and first.method == "POST"
    pause = plan.send(httpx.ConnectError("refused"))
    assert isinstance(pause, Sleep) and 0 <= pause.seconds <= 0.2
    again = plan.send(None)
    assert isinstance(again, Send) and again.url == first.url
    assert finish(plan, answer(again, 201)).status_code == 201


def test_a_post_whose_answer_was_lost_is_not_sent_twice(client: LatchkeyClient) -> None:
    plan = client._send_plan("POST", "v1/items", authenticated=False)
    next(plan)
    lost = httpx.ReadTimeout("no answer")
    with pytest.raises(NetworkTimeoutError) as caught:
        plan.send(lost)
    assert caught.value.__cause__ is lost


def test_a_get_answered_429_waits_at_least_retry_after_then_resends(
    client: LatchkeyClient,
) -> None:
    plan = client._send_plan("GET", "v1/items", authenticated=False)
    step = next(plan)
    pause = plan.send(answer(step, 429, headers={"Retry-After": "2"},
                             json={"code": "rate_limited"}))
    assert isinstance(pause, Sleep) and pause.seconds >= 2
    assert isinstance(plan.send(None), Send)


def test_retries_stop_at_max_retries_and_the_last_answer_is_returned() -> None:
    with LatchkeyClient(base_url=BASE, idle_logout=False, max_retries=1) as client:
        plan = client._send_plan("GET", "v1/items", authenticated=False)
        step = next(plan)
        assert isinstance(plan.send(answer(step, 503)), Sleep)
        step = plan.send(None)
        assert finish(plan, answer(step, 503)).status_code == 503


def signed_in(client: LatchkeyClient) -> None:
    """Give ``client`` a session as a login answer would (refresh token ``r-1``)."""
    client._core.accept({"access_token": "a", "refresh_token": "r-1", "expires_in": 300,
                         "session_id": "s"}, received_at=client._core.clock(),
                        event=EventName.SIGNED_IN)


def test_logout_wipes_first_and_keeps_an_unconfirmed_revocation_pending() -> None:
    storage = MemoryStorage()
    with LatchkeyClient(base_url=BASE, idle_logout=False, storage=storage) as client:
        signed_in(client)
        plan = client._logout_plan(SignOutReason.USER)
        step = next(plan)
        assert not client.is_signed_in  # wiped before the server was even asked
        assert isinstance(step, Send) and step.options["json"] == {"refresh_token": "r-1"}
        assert isinstance(plan.send(httpx.ConnectError("offline")), Sleep)
        assert isinstance(plan.send(None), Send)  # one retry, then it gives up
        result = finish(plan, httpx.ConnectError("still offline"))
    assert result.pending and not result.server_confirmed
    assert client.pending_revocations == 1 and storage.load("pending_revocations")


def test_logout_refused_for_good_is_neither_confirmed_nor_pending(
    client: LatchkeyClient,
) -> None:
    signed_in(client)
    plan = client._logout_plan(SignOutReason.USER)
    step = next(plan)
    result = finish(plan, answer(step, 401, json={"code": "invalid_token"}))
    assert not result.pending and not result.server_confirmed
    assert client.pending_revocations == 0


def test_a_refresh_whose_answer_was_lost_is_replayed_with_the_same_token(
    client: LatchkeyClient,
) -> None:
    plan = client.auth._replay_plan("r-1")
    first = next(plan)
    # No bearer on a refresh; only the DPoP proof auth, which signs anew on every send.
    assert isinstance(first, Send) and isinstance(first.auth, ProofAuth)
    assert isinstance(plan.send(httpx.ReadError("dropped")), Sleep)
    replay = plan.send(None)
    assert isinstance(replay, Send) and replay.options == first.options
    doc, _received_at = finish(plan, answer(replay, 200, json={"refresh_token": "r-2"}))
    assert doc == {"refresh_token": "r-2"}
    assert client.auth.refresh_requests == 2


def test_a_refresh_whose_answer_stays_lost_gives_up_within_the_replay_budget() -> None:
    with LatchkeyClient(base_url=BASE, idle_logout=False) as client:
        client.auth._replay_seconds = 0.0  # the budget is spent before the first retry
        plan = client.auth._replay_plan("r-1")
        next(plan)
        with pytest.raises(NetworkError) as caught:
            plan.send(httpx.ReadError("dropped"))
    assert "refresh" in str(caught.value) and "r-1" not in str(caught.value)


def test_a_refresh_that_never_reached_the_server_is_not_replayed(
    client: LatchkeyClient,
) -> None:
    plan = client.auth._replay_plan("r-1")
    next(plan)
    refused = httpx.ConnectError("refused")
    with pytest.raises(NetworkError) as caught:
        plan.send(refused)  # no Sleep, no second Send: nothing rotated on the server
    assert caught.value.__cause__ is refused
    assert client.auth.refresh_requests == 1


def test_a_refresh_replay_ends_at_the_calls_deadline(client: LatchkeyClient) -> None:
    plan = client.auth._replay_plan("r-1", Deadline.after(0.0))
    first = next(plan)
    assert first.timeout.read == 0.05  # clipped to the (spent) call budget, not 10 s
    with pytest.raises(NetworkTimeoutError):
        plan.send(httpx.ReadTimeout("hung"))


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_get_answered_by_a_gateway_with_retry_after_waits_at_least_that_long(
    client: LatchkeyClient, status: int
) -> None:
    plan = client._send_plan("GET", "v1/items", authenticated=False)
    step = next(plan)
    pause = plan.send(answer(step, status, headers={"Retry-After": "2"}))
    assert isinstance(pause, Sleep) and pause.seconds >= 2


def test_a_logout_that_meets_a_closed_client_stays_pending() -> None:
    storage = MemoryStorage()
    with LatchkeyClient(base_url=BASE, idle_logout=False, storage=storage) as client:
        signed_in(client)
        told: list[int] = []
        client.on(EventName.SIGNED_OUT, lambda e: told.append(client.pending_revocations))
        plan = client._logout_plan(SignOutReason.USER)
        next(plan)
        assert told == [1]  # on record before the app heard of the sign-out
        result = finish(plan, ClientClosedError("the client is closed"))
    assert result.pending and not result.server_confirmed
    assert storage.load("pending_revocations")


def test_a_refresh_in_the_sessions_last_second_ends_it_as_absolute_not_token_expired(
    client: LatchkeyClient,
) -> None:
    """The server caps a token at the absolute end in whole seconds: ``expires_in: 0``."""
    signed_in(client)
    plan = client.auth._refresh_plan(stale=client._core.tokens)
    step = next(plan)
    with pytest.raises(SessionExpiredError) as caught:
        plan.send(answer(step, 200, json={"access_token": "b", "refresh_token": "r-2",
                                          "expires_in": 0, "absolute_expires_in": 0,
                                          "session_id": "s"}))
    assert caught.value.reason == "absolute"
    assert not client.is_signed_in and client.signed_out_reason is SignOutReason.ABSOLUTE
def test_an_answer_ending_a_session_the_client_already_replaced_resends_with_the_new_one(
    client: LatchkeyClient,
) -> None:
    """A request in flight while a step-up replaced the session: the server answers
    ``session_revoked`` (reason ``step_up``) for the old one; the new one must survive."""
    signed_in(client)
    old = client._core.tokens
    flow = client.auth._bearer_flow(httpx.Request("GET", f"{BASE}/v1/me"))
    assert next(flow).stale is None
    request = flow.send(old)
    assert request.headers["Authorization"] == "Bearer a"
    # The step-up's answer arrives first: a new session.
    client._core.accept({"access_token": "b", "refresh_token": "r-2", "expires_in": 300,
                         "session_id": "s2"}, received_at=client._core.clock(),
                        event=EventName.SIGNED_IN)
    stale = httpx.Response(401, json={"code": "session_revoked", "reason": "step_up"},
                           request=request)
    again = flow.send(stale)
    assert again.stale is old  # "give me tokens newer than the old ones": no refresh needed
    resent = flow.send(client._core.tokens)
    assert resent.headers["Authorization"] == "Bearer b"
    assert client.is_signed_in and client.session.session_id == "s2"
    # The same answer about the session still held ends it, as before.
    flow = client.auth._bearer_flow(httpx.Request("GET", f"{BASE}/v1/me"))
    next(flow)
    request = flow.send(client._core.tokens)
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(401, json={"code": "session_revoked", "reason": "remote"},
                                 request=request))
    assert not client.is_signed_in and client.signed_out_reason is SignOutReason.REMOTE
