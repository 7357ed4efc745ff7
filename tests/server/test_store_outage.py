"""A store outage fails closed (503 ``store_unavailable``, never 200, never 500) and heals.

The test owns its redis-server (append-only, fsync always) and kills it under a running
latchkey-server, then starts it again on the same port and data directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, RedisProcess, ServerProcess, start_redis, start_server
from tests.server.ops_support import metric_value, sign_in, wait_for

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """A redis-server of this test's own; the list holds the current process."""
    holder = [start_redis(tmp_path / "redis", None, *DURABLE)]
    yield holder
    holder[-1].stop()


@pytest.fixture
def server(tmp_path: Path, outage_redis: list[RedisProcess]) -> Iterator[ServerProcess]:
    process = start_server(tmp_path / "instance", {"LATCHKEY_WORKERS": "2"},
                           redis_url=outage_redis[0].url)
    yield process
    process.stop()


def assert_store_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "store_unavailable"


def test_every_store_backed_endpoint_answers_503_while_redis_is_down_then_recovers(
        server: ServerProcess, outage_redis: list[RedisProcess]) -> None:
    username, tokens = sign_in(server)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    http = server.client()
    assert http.get("/v1/me", headers=bearer).status_code == 200

    redis_process = outage_redis[0]
    redis_process.proc.kill()  # no goodbye: a crash, not a shutdown
    redis_process.proc.wait()

    started = time.monotonic()
    # The access token's signature is fine, but the session cannot be checked: never 200.
    assert_store_unavailable(http.get("/v1/me", headers=bearer))
    assert time.monotonic() - started < 3, "a dead store must fail fast, not hang"
    assert_store_unavailable(http.get("/readyz"))
    assert http.get("/healthz").status_code == 200
    # Login (its rate limit is read first, from the same Redis), registration, refresh,
    # logout, the session list, step-up: all fail closed.
    assert_store_unavailable(http.post("/v1/auth/login", json={
        "username": username, "password": PASSWORD}))
    assert_store_unavailable(http.post("/v1/auth/login", json={
        "username": username, "password": "wrong password 123"}))
    assert_store_unavailable(http.post("/v1/auth/register", json={
        "username": username + "x", "password": PASSWORD}))
    assert_store_unavailable(http.post("/v1/auth/refresh", json={
        "refresh_token": tokens["refresh_token"]}))
    assert_store_unavailable(http.get("/v1/auth/sessions", headers=bearer))
    assert_store_unavailable(http.post("/v1/auth/reauth", headers=bearer,
                                       json={"password": PASSWORD}))
    assert_store_unavailable(http.post("/v1/auth/logout", headers=bearer))
    # A token that is no token needs no store to be refused.
    garbage = http.get("/v1/me", headers={"Authorization": "Bearer eyJx.eyJy.z"})
    assert garbage.status_code == 401
    # A leaked token in a URL is refused even when its session cannot be ended now.
    leaked = http.get("/v1/me", params={"access_token": tokens["access_token"]})
    assert_store_unavailable(leaked)

    # Redis comes back on the same port with its append-only file: the same tokens work.
    outage_redis.append(start_redis(redis_process.data_dir, redis_process.port, *DURABLE))
    assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout_seconds=20)
    assert http.get("/v1/me", headers=bearer).status_code in (200, 401)
    fresh = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert fresh.status_code == 200
    new_bearer = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    # Every worker's pool reconnects (several requests spread over both workers).
    for _ in range(10):
        with server.client() as fresh_connection:
            assert fresh_connection.get("/v1/me", headers=new_bearer).status_code == 200
    refreshed = http.post("/v1/auth/refresh", json={
        "refresh_token": fresh.json()["refresh_token"]})
    assert refreshed.status_code == 200
    http.close()

    logs = server.logs()
    assert '"internal_error"' not in logs and "Traceback" not in logs
    text = httpx.get(server.base_url + "/metrics").text
    assert metric_value(text, "latchkey_http_responses_total", status="503") >= 1
    assert metric_value(text, "latchkey_http_responses_total", status="500") == 0


def test_sessions_that_were_live_before_the_outage_are_live_after_it(
        server: ServerProcess, outage_redis: list[RedisProcess]) -> None:
    _, tokens = sign_in(server)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    redis_process = outage_redis[0]
    redis_process.proc.kill()
    redis_process.proc.wait()
    with server.client() as http:
        assert_store_unavailable(http.get("/v1/me", headers=bearer))
        outage_redis.append(start_redis(redis_process.data_dir, redis_process.port, *DURABLE))
        assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout_seconds=20)
        assert http.get("/v1/me", headers=bearer).status_code == 200
        r = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 200
        assert r.json()["session_id"] == tokens["session_id"]


def test_a_security_event_the_stream_cannot_take_is_still_logged_and_counted(
        tmp_path: Path) -> None:
    """The stream sink never fails the request that raised the event (it is logged)."""
    from latchkey_server import create_app
    from latchkey_server.extension import services
    from prometheus_client import REGISTRY

    from tests.conftest import free_port

    app = create_app({"redis_url": f"redis://127.0.0.1:{free_port()}/0",
                      "instance_path": tmp_path / "instance", "redis_retries": 0})
    def stream_errors() -> float:
        return REGISTRY.get_sample_value("latchkey_security_stream_errors_total") or 0.0

    before = stream_errors()
    with app.test_request_context("/"):
        services().events.security("admin_action", actor="test", action="noop")
    assert stream_errors() == before + 1
