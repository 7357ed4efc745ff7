"""D2: guessing and brute force are slowed, then refused with 429 and Retry-After.

One latchkey-server (gunicorn) with small budgets, on a redis-server of its own whose
rate-limit counters are wiped before each test. Only failures are counted: the tests
check both that failures run out the budget and that successes leave it untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from latchkey_server import create_app, throttle

from tests.conftest import PASSWORD, RedisProcess, ServerProcess
from tests.server.ops_support import client_commands_during, sign_in, wipe_rate_limits

ACCOUNT_BUDGET = 3
IP_BUDGET = 8
TOKEN_BUDGET = 5
WINDOW_SECONDS = 60
GARBAGE_JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def d2_redis(module_redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    return module_redis_factory()


@pytest.fixture(scope="module")
def throttled(d2_redis: RedisProcess,
              module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return module_server_factory(
        store_url=d2_redis.url, login_failures_per_account=ACCOUNT_BUDGET,
        login_failures_per_account_window=WINDOW_SECONDS, login_failures_per_ip=IP_BUDGET,
        login_failures_per_ip_window=WINDOW_SECONDS, registration_failures_per_ip=IP_BUDGET,
        registration_failures_per_name=ACCOUNT_BUDGET,
        registration_failures_per_name_window=WINDOW_SECONDS,
        invalid_tokens_per_ip=TOKEN_BUDGET, invalid_tokens_per_ip_window=WINDOW_SECONDS)


@pytest.fixture
def http(throttled: ServerProcess, d2_redis: RedisProcess) -> Iterator[httpx.Client]:
    """A client on the throttled server, with every rate-limit counter wiped first."""
    wipe_rate_limits(d2_redis.client())
    with throttled.client() as client:
        yield client


def login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post("/v1/auth/login", json={"username": username, "password": password})


def assert_too_many_requests(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "too_many_requests"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS + 1


def test_failed_logins_against_one_account_are_refused_after_the_budget(
        throttled: ServerProcess, http: httpx.Client) -> None:
    username, _ = sign_in(throttled, http)
    for _ in range(ACCOUNT_BUDGET):
        assert login(http, username, "wrong password 123").status_code == 401
    # Refused now, even with the right password: the account is being guessed at.
    assert_too_many_requests(login(http, username, PASSWORD))
    assert_too_many_requests(login(http, username.upper(), "wrong password 123"))
    # Other accounts from the same address are not locked by it.
    other, _ = sign_in(throttled, http)
    assert login(http, other, PASSWORD).status_code == 200


def test_successful_logins_do_not_spend_the_budget(
        throttled: ServerProcess, http: httpx.Client) -> None:
    username, _ = sign_in(throttled, http)
    for _ in range(ACCOUNT_BUDGET * 3):
        assert login(http, username, PASSWORD).status_code == 200
    for _ in range(ACCOUNT_BUDGET):
        assert login(http, username, "wrong password 123").status_code == 401
    assert_too_many_requests(login(http, username, "wrong password 123"))


def test_failed_logins_from_one_ip_are_refused_across_accounts(http: httpx.Client) -> None:
    for i in range(IP_BUDGET):
        assert login(http, f"nobody-{i}", "wrong password 123").status_code == 401
    assert_too_many_requests(login(http, "nobody-else", "wrong password 123"))


def test_probing_a_taken_username_is_throttled(
        throttled: ServerProcess, http: httpx.Client) -> None:
    username, _ = sign_in(throttled, http)
    for _ in range(ACCOUNT_BUDGET):
        r = http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
        assert r.status_code == 409
    r = http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert_too_many_requests(r)


def test_invalid_bearer_tokens_from_one_ip_are_refused_while_valid_ones_still_work(
        throttled: ServerProcess, http: httpx.Client) -> None:
    _, tokens = sign_in(throttled, http)
    for _ in range(TOKEN_BUDGET):
        r = http.get("/v1/me", headers={"Authorization": f"Bearer {GARBAGE_JWT}"})
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_token"
    r = http.get("/v1/me", headers={"Authorization": f"Bearer {GARBAGE_JWT}"})
    assert_too_many_requests(r)
    # Invalid refresh tokens are guesses too.
    assert_too_many_requests(http.post("/v1/auth/refresh", json={"refresh_token": "lkr_x"}))
    # A genuine token is never counted nor refused: users behind the same carrier NAT
    # keep working while a guesser on their address is stopped.
    r = http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 200


def test_spoofed_forwarded_for_does_not_escape_the_ip_budget(http: httpx.Client) -> None:
    # No trusted proxy is configured, so X-Forwarded-For is the client's word only.
    for i in range(TOKEN_BUDGET):
        r = http.get("/v1/me", headers={"Authorization": f"Bearer {GARBAGE_JWT}",
                                        "X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 401
    r = http.get("/v1/me", headers={"Authorization": f"Bearer {GARBAGE_JWT}",
                                    "X-Forwarded-For": "198.51.100.99"})
    assert_too_many_requests(r)


def test_requests_without_any_token_are_not_counted_as_guesses(http: httpx.Client) -> None:
    for _ in range(TOKEN_BUDGET * 2):
        r = http.get("/v1/me")
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_token"


def test_wrong_passwords_at_step_up_are_throttled(
        throttled: ServerProcess, http: httpx.Client) -> None:
    _, tokens = sign_in(throttled, http)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for _ in range(ACCOUNT_BUDGET):
        r = http.post("/v1/auth/reauth", json={"password": "wrong password 123"},
                      headers=bearer)
        assert r.status_code == 401
    r = http.post("/v1/auth/reauth", json={"password": PASSWORD}, headers=bearer)
    assert_too_many_requests(r)


def test_a_valid_protected_request_makes_exactly_one_redis_call(
        throttled: ServerProcess, http: httpx.Client, d2_redis: RedisProcess) -> None:
    _, tokens = sign_in(throttled, http)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for _ in range(10):  # warm the worker's connection pool and the script cache
        assert http.get("/v1/me", headers=bearer).status_code == 200
    monitor = d2_redis.client()
    counts = sorted(len(client_commands_during(
        monitor, lambda: http.get("/v1/me", headers=bearer).raise_for_status()))
        for _ in range(5))
    # The median: a first use of a connection on a new worker thread may add a handshake.
    assert counts[2] == 1, counts
    # A failure does cost the counter: one more call, and only then.
    bad = {"Authorization": f"Bearer {GARBAGE_JWT}"}
    commands = client_commands_during(monitor, lambda: http.get("/v1/me", headers=bad))
    assert len(commands) == 1, commands


def test_each_view_spends_the_budgets_it_declares_under_todays_counter_scopes(app) -> None:
    # The scopes are part of every counter's key in Redis: a change would reset budgets.
    applied = app.extensions[throttle.EXTENSION_KEY].budgets_by_scope
    assert applied == {
        "account": throttle.ACCOUNT_FAILURES,
        "taken_name": throttle.TAKEN_NAME_FAILURES,
        "auth.login:ip": throttle.LOGIN_IP_FAILURES,
        "auth.register:ip": throttle.REGISTRATION_IP_FAILURES,
        "step_up": throttle.STEP_UP_FAILURES,
        "sessions.reauth:ip": throttle.STEP_UP_IP_FAILURES,
        "sessions.password:ip": throttle.STEP_UP_IP_FAILURES,
    }


def test_a_budget_that_no_view_declares_stops_the_app_at_start(
        monkeypatch: pytest.MonkeyPatch, redis_server: RedisProcess, tmp_path: Path) -> None:
    """A view that lost its ``@throttle.limited`` line must not silently lose its limit."""
    if redis_server.url is None:
        pytest.skip("the embedded backend would start a Redis for an app that never starts")
    orphan = replace(throttle.LOGIN_IP_FAILURES, label="orphan_failures")
    monkeypatch.setattr(throttle, "BUDGETS", (*throttle.BUDGETS, orphan))
    with pytest.raises(RuntimeError, match="orphan_failures"):
        create_app({"redis_url": redis_server.url, **getattr(redis_server, "settings", {}),
                    "instance_path": tmp_path / "instance"})
