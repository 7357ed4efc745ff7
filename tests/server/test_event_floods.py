"""H2 and D4 under a flood: events are budgeted per source and summarised, and the alerts
live where unauthenticated traffic cannot evict them (issue 13).

A real server on a redis-server of the module's own, with a short alert stream and the
default per-source budget (3 events of a kind per source per minute).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import redis
from latchkey_server.store import SECURITY_NOISE_STREAM_KEY, SECURITY_STREAM_KEY
from latchkey_server.tokens import RefreshToken

from tests.conftest import RedisProcess, ServerProcess
from tests.server.ops_support import sign_in, wipe_rate_limits
from tests.server.store_support import forget_session

STREAM_MAX_LENGTH = 20
PER_SOURCE = 3
FLOOD = 300


@pytest.fixture(scope="module")
def flood_redis(module_redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    return module_redis_factory("--stream-node-max-entries", "5")


@pytest.fixture(scope="module")
def server(flood_redis: RedisProcess,
           module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return module_server_factory(
        store_url=flood_redis.url, refresh_reuse_grace=0, binding_policy="report",
        security_stream_max_length=STREAM_MAX_LENGTH, security_events_per_source=PER_SOURCE)


@pytest.fixture
def store(flood_redis: RedisProcess) -> redis.Redis:
    """The Redis of the streams, emptied, with every budget full."""
    client = flood_redis.client()
    wipe_rate_limits(client)
    for key in [SECURITY_STREAM_KEY, SECURITY_NOISE_STREAM_KEY,
                *client.scan_iter("lk:evb:*")]:
        client.delete(key)
    return client


def entries(store: redis.Redis, key: str, event: str | None = None) -> list[dict[str, Any]]:
    return [f for _, f in store.xrange(key) if event is None or f["event"] == event]


def test_a_flood_of_token_shaped_urls_writes_a_few_events_and_summaries(
        server: ServerProcess, store: redis.Redis) -> None:
    with server.client() as http:
        for _ in range(FLOOD):
            assert http.get("/healthz", params={"token": "x"}).status_code == 400
    noise = entries(store, SECURITY_NOISE_STREAM_KEY)
    named = [e for e in noise if e["event"] == "token_shaped_value_in_url"]
    summaries = [e for e in noise if e["event"] == "security_events_summarised"]
    assert len(named) == PER_SOURCE
    assert [int(s["count"]) for s in summaries] == [10, 100]
    assert {s["summarised_event"] for s in summaries} == {"token_shaped_value_in_url"}
    assert summaries[0]["source"] == "127.0.0.1" and summaries[0]["window_seconds"] == "60"
    # A value that is none of our tokens is noise: it never reaches the alerts.
    assert entries(store, SECURITY_STREAM_KEY) == []
    r = httpx.get(server.base_url + "/metrics")
    assert 'latchkey_security_events_total{event="token_shaped_value_in_url"} 300.0' in r.text


def test_alternating_device_ids_raise_a_bounded_number_of_binding_events(
        server: ServerProcess, store: redis.Redis) -> None:
    _, tokens = sign_in(server, device_id="phone-a")
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    with server.client() as http:
        for i in range(60):
            device = ("phone-b", "phone-c")[i % 2]
            assert http.get("/v1/me", headers={**bearer, "X-Device-Id": device}
                            ).status_code == 200
    changed = entries(store, SECURITY_STREAM_KEY, "binding_changed")
    assert len(changed) == PER_SOURCE
    summary = entries(store, SECURITY_STREAM_KEY, "security_events_summarised")
    assert [s["summarised_event"] for s in summary] == ["binding_changed"]


def test_a_flood_of_unauthenticated_traffic_cannot_evict_a_reuse_alert(
        server: ServerProcess, store: redis.Redis) -> None:
    _, tokens = sign_in(server)
    with server.client() as http:
        assert http.post("/v1/auth/refresh",
                         json={"refresh_token": tokens["refresh_token"]}).status_code == 200
        r = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.json()["code"] == "refresh_token_reused"
        # Then a flood from many "clients": bogus tokens in URLs and garbage bearers.
        for i in range(FLOOD):
            http.get("/healthz", params={"access_token": f"x{i}"})
            http.get("/v1/me", headers={"Authorization": "Bearer eyJx.eyJy.z"})
    assert len(entries(store, SECURITY_STREAM_KEY, "refresh_token_reused")) == 1


def test_a_never_minted_refresh_token_is_noise_and_a_minted_one_naming_no_session_alerts(
        server: ServerProcess, store: redis.Redis, flood_redis: RedisProcess) -> None:
    _, tokens = sign_in(server)
    user_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    forged = RefreshToken.build(user_id, tokens["session_id"], 0, secrets.token_bytes(32))
    with server.client() as http:
        r = http.post("/v1/auth/refresh", json={"refresh_token": forged.value})
        assert r.json()["code"] == "invalid_token"
        assert entries(store, SECURITY_STREAM_KEY, "unknown_session_token") == []
        # A token we minted whose session we no longer hold (a restore from an old
        # backup, or a leaked key): that is what the alert is for.
        forget_session(flood_redis.client(), user_id, tokens["session_id"])
        r = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.json()["code"] == "invalid_token"
    (alert,) = entries(store, SECURITY_STREAM_KEY, "unknown_session_token")
    assert alert["kind"] == "refresh"
