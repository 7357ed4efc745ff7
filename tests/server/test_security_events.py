"""D4: security events go to the structured log, a capped Redis stream, and metrics.

A latchkey-server on a redis-server of its own (so the stream holds only this module's
events), with Redis' stream nodes small enough that ``MAXLEN ~`` trimming shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import redis
from latchkey_server.store import SECURITY_NOISE_STREAM_KEY, SECURITY_STREAM_KEY

from tests.conftest import RedisProcess, ServerProcess
from tests.server.ops_support import metric_value, sign_in, wait_for, wipe_rate_limits
from tests.server.store_support import forget_session

STREAM_MAX_LENGTH = 50


@pytest.fixture(scope="module")
def d4_redis(module_redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    return module_redis_factory("--stream-node-max-entries", "10")


@pytest.fixture(scope="module")
def server(d4_redis: RedisProcess,
           module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return module_server_factory(
        store_url=d4_redis.url, refresh_reuse_grace=0, login_failures_per_account=2,
        invalid_tokens_per_ip=3, security_stream_max_length=STREAM_MAX_LENGTH, workers=2,
        # These tests follow single events to the stream; the per-source budget has its
        # own tests (test_event_floods.py).
        security_events_per_source=100_000)


@pytest.fixture
def stream(d4_redis: RedisProcess) -> redis.Redis:
    """The Redis holding the stream; every test starts with full rate-limit budgets."""
    client = d4_redis.client()
    wipe_rate_limits(client)
    return client


def events_named(stream: redis.Redis, name: str) -> list[dict[str, Any]]:
    """Return the entries of one event, from the alert stream and the noise stream."""
    return [fields for key in (SECURITY_STREAM_KEY, SECURITY_NOISE_STREAM_KEY)
            for _, fields in stream.xrange(key) if fields.get("event") == name]


def log_events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in server.logs().splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def metrics(server: ServerProcess) -> str:
    r = httpx.get(server.base_url + "/metrics")
    assert r.status_code == 200
    return r.text


def test_refresh_token_reuse_is_logged_streamed_and_counted(
        server: ServerProcess, stream: redis.Redis) -> None:
    before = metric_value(metrics(server), "latchkey_security_events_total",
                          event="refresh_token_reused")
    _, tokens = sign_in(server)
    with server.client() as http:
        rotated = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
        reused = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert reused.status_code == 401
        assert reused.json()["code"] == "refresh_token_reused"

    entries = events_named(stream, "refresh_token_reused")
    assert entries, "no refresh_token_reused entry on the stream"
    entry = entries[-1]
    assert entry["session_ref"] and entry["user_ref"] and entry["ts"].endswith("Z")
    assert entry["ip"] == "127.0.0.1"
    # The stream names the session by its pseudonym, like the log, never by id or token.
    assert tokens["session_id"] not in json.dumps(entries)
    assert any(e["session_ref"] == entry["session_ref"]
               for e in log_events(server, "refresh_token_reused"))
    assert metric_value(metrics(server), "latchkey_security_events_total",
                        event="refresh_token_reused") == before + 1


def test_token_in_url_is_streamed_with_the_revocation(
        server: ServerProcess, stream: redis.Redis) -> None:
    _, tokens = sign_in(server)
    r = httpx.get(server.base_url + "/v1/me", params={"access_token": tokens["access_token"]})
    assert r.status_code == 400
    entry = events_named(stream, "token_in_url")[-1]
    assert entry["revoked"] == "true"
    assert tokens["access_token"] not in json.dumps(events_named(stream, "token_in_url"))


def test_brute_force_is_reported_once_per_window_not_per_refusal(
        server: ServerProcess, stream: redis.Redis) -> None:
    username, _ = sign_in(server)
    before_events = len(events_named(stream, "brute_force"))
    before_refusals = metric_value(metrics(server), "latchkey_rate_limited_total",
                                   limit="account_failures")
    statuses = []
    with server.client() as http:
        for _ in range(8):
            statuses.append(http.post("/v1/auth/login", json={
                "username": username, "password": "wrong password 123"}).status_code)
    assert statuses == [401, 401] + [429] * 6
    reported = events_named(stream, "brute_force")[before_events:]
    assert len(reported) == 1, reported
    assert reported[0]["limit"] == "account_failures"
    assert reported[0]["account_ref"] and username not in json.dumps(reported)
    assert log_events(server, "brute_force")
    assert metric_value(metrics(server), "latchkey_rate_limited_total",
                        limit="account_failures") == before_refusals + 6


def test_token_guessing_is_reported(server: ServerProcess, stream: redis.Redis) -> None:
    before = len(events_named(stream, "token_guessing"))
    with server.client() as http:
        codes = [http.get("/v1/me", headers={"Authorization": "Bearer eyJx.eyJy.z"}).status_code
                 for _ in range(6)]
    assert 429 in codes
    reported = events_named(stream, "token_guessing")[before:]
    assert len(reported) == 1
    assert reported[0]["limit"] == "invalid_token_ip"


def test_unknown_session_token_is_streamed(server: ServerProcess, stream: redis.Redis,
                                           d4_redis: RedisProcess) -> None:
    _, tokens = sign_in(server)
    # The session record vanishes (as after a restore from an old backup): the token's
    # signature is still ours, its session is unknown.
    user_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    forget_session(d4_redis.client(), user_id, tokens["session_id"])
    before = len(events_named(stream, "unknown_session_token"))
    r = httpx.get(server.base_url + "/v1/me",
                  headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401
    assert len(events_named(stream, "unknown_session_token")) == before + 1


def test_the_stream_stays_bounded(server: ServerProcess, stream: redis.Redis) -> None:
    _, tokens = sign_in(server)
    leaked = {"access_token": tokens["access_token"]}
    with server.client() as http:
        # Every presentation of a leaked token in a URL is reported, revoked or not.
        for _ in range(STREAM_MAX_LENGTH * 3):
            assert http.get("/healthz", params=leaked).status_code == 400
    assert wait_for(lambda: stream.xlen(SECURITY_STREAM_KEY) <= STREAM_MAX_LENGTH + 10)
    assert stream.xlen(SECURITY_STREAM_KEY) >= STREAM_MAX_LENGTH


def test_a_consumer_group_reads_and_acknowledges_events(
        server: ServerProcess, stream: redis.Redis) -> None:
    """The recipe of docs/OPERATIONS.md: a group, a consumer, read, handle, acknowledge."""
    try:
        stream.xgroup_create(SECURITY_STREAM_KEY, "secops", id="$", mkstream=True)
    except redis.ResponseError as exc:  # BUSYGROUP: it exists already
        assert "BUSYGROUP" in str(exc)
    _, tokens = sign_in(server)
    httpx.get(server.base_url + "/healthz", params={"access_token": tokens["access_token"]})
    batch = stream.xreadgroup("secops", "siem-1", {SECURITY_STREAM_KEY: ">"}, count=100,
                              block=2000)
    assert batch
    (_, entries), = batch
    assert any(fields["event"] == "token_in_url" for _, fields in entries)
    ids = [entry_id for entry_id, _ in entries]
    assert stream.xack(SECURITY_STREAM_KEY, "secops", *ids) == len(ids)
    assert stream.xpending(SECURITY_STREAM_KEY, "secops")["pending"] == 0
