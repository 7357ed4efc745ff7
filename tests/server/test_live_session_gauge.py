"""Issue 14 item 5: ``latchkey_live_sessions``, a live-session gauge that costs no request.

The sweep (``latchkey-server sessions sweep``) counts the live sessions while it prunes and
writes the total once; ``/metrics`` serves it, cached per worker. End to end against a
real gunicorn with two workers and a store of the test's own (a redis-server, or a
3-master Redis Cluster with ``LATCHKEY_TEST_BACKEND=cluster``), so no other test's sweep
writes the figure; once on the embedded store a quick start runs; the cache and the
outage handling in-process against a real redis-server that is stopped and started again.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from latchkey_server import create_app
from latchkey_server.config import load_settings
from latchkey_server.extension import services
from latchkey_server.observability import LIVE_SESSIONS_CACHE_SECONDS, LiveSessionsCollector
from latchkey_server.redis_connection import connect
from latchkey_server.store import LiveSessions, SessionStore
from latchkey_server.tokens import new_session_id, new_user_id
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    PASSWORD,
    TEST_BACKEND,
    VENV_BIN,
    ServerProcess,
    start_redis,
    start_redis_cluster,
)
from tests.server.ops_support import sign_in, wait_for
from tests.server.store_support import age_session

GAUGE = "latchkey_live_sessions"
MEASURED = "latchkey_live_sessions_measured_timestamp_seconds"
IDLE_TIMEOUT_SECONDS = 1800


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[Any]:
    """A store only this test writes: the live-session key is one per store."""
    if TEST_BACKEND == "embedded":
        pytest.skip("ages session records through a direct client of the store")
    store: Any = (start_redis_cluster(tmp_path / "cluster") if TEST_BACKEND == "cluster"
                  else start_redis(tmp_path / "redis"))
    yield store
    store.stop()


def gauge_samples(server: ServerProcess) -> dict[str, list[float]]:
    """Scrape once, on a new connection (so gunicorn picks either worker); return the
    values of the two live-session families, an empty list for one that is absent."""
    r = httpx.get(server.base_url + "/metrics")
    assert r.status_code == 200
    found: dict[str, list[float]] = {GAUGE: [], MEASURED: []}
    for family in text_string_to_metric_families(r.text):
        if family.name in found:
            found[family.name] = [s.value for s in family.samples]
    return found


def sweep(server: ServerProcess) -> str:
    """Run the operator's sweep next to the server, with its environment; return stdout."""
    result = subprocess.run([str(VENV_BIN / "latchkey-server"), "sessions", "sweep"],
                            env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def claims(tokens: dict[str, Any]) -> dict[str, Any]:
    return jwt.decode(tokens["access_token"], options={"verify_signature": False})


def test_the_gauge_is_absent_before_a_sweep_then_counts_only_live_sessions(
        server_factory, own_store) -> None:
    server = server_factory(workers=2, store_url=own_store.url,
                            idle_timeout=IDLE_TIMEOUT_SECONDS)
    for _ in range(4):
        assert gauge_samples(server) == {GAUGE: [], MEASURED: []}

    http = server.client()
    live = 0
    for _ in range(3):
        sign_in(server, http)
        live += 1
    username, _ = sign_in(server, http)  # a user with two live sessions
    r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200
    live += 2
    for _ in range(2):  # ended by their users: retained records, not live
        _, tokens = sign_in(server, http)
        assert http.post("/v1/auth/logout",
                         json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    for _ in range(2):  # idle past the limit: still marked live in the record, but over
        _, tokens = sign_in(server, http)
        c = claims(tokens)
        age_session(own_store.client(), c["sub"], c["sid"], (IDLE_TIMEOUT_SECONDS + 60) * 1000)
    http.close()

    before = time.time()
    assert f", {live} live" in sweep(server)
    after = time.time()
    # Each worker may still serve the absence it read for up to the cache period; then
    # every scrape, whichever worker answers, shows the one figure.
    assert wait_for(lambda: gauge_samples(server)[GAUGE] == [live],
                    timeout_seconds=LIVE_SESSIONS_CACHE_SECONDS + 10)
    assert wait_for(lambda: all(gauge_samples(server)[GAUGE] == [live] for _ in range(6)),
                    timeout_seconds=LIVE_SESSIONS_CACHE_SECONDS + 10)
    (measured,) = gauge_samples(server)[MEASURED]
    assert before - 1 <= measured <= after + 1  # Redis's clock, on this same host


def test_a_scrape_while_redis_is_down_is_served_without_the_gauge(server_factory,
                                                                   own_store) -> None:
    server = server_factory(workers=2, store_url=own_store.url)
    sweep(server)
    assert wait_for(lambda: gauge_samples(server)[GAUGE] == [0])
    own_store.stop()
    assert wait_for(lambda: all(gauge_samples(server) == {GAUGE: [], MEASURED: []}
                                for _ in range(4)),
                    timeout_seconds=LIVE_SESSIONS_CACHE_SECONDS + 10)
    text = httpx.get(server.base_url + "/metrics").text
    assert 'latchkey_security_events_total{event="token_in_url"}' in text
    assert "Traceback" not in server.logs()
    assert "live_sessions_unavailable" in server.logs()


def test_the_embedded_store_records_the_gauge_too(server_factory) -> None:
    server = server_factory(embedded=True)  # the quick start's bundled Redis
    sign_in(server)
    assert ", 1 live" in sweep(server)
    assert wait_for(lambda: gauge_samples(server)[GAUGE] == [1],
                    timeout_seconds=LIVE_SESSIONS_CACHE_SECONDS + 10)


def test_a_single_process_server_serves_the_gauge_beside_its_own_counters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # no gunicorn: one registry
    redis_proc = start_redis(tmp_path / "redis")
    try:
        app = create_app({"redis_url": redis_proc.url, "instance_path": tmp_path / "instance"})
        with app.app_context():
            services().store.sweep_sessions()
        r = app.test_client().get("/metrics")
        assert r.status_code == 200
        values = {f.name: [s.value for s in f.samples]
                  for f in text_string_to_metric_families(r.get_data(as_text=True))}
        assert values[GAUGE] == [0]
        assert "latchkey_security_events" in values  # the process registry is still served
    finally:
        redis_proc.stop()


class FakeClock:
    """A monotonic clock the test moves on, so the cache period needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _new_session(store: SessionStore) -> None:
    store.create_session(user_id=new_user_id(), session_id=new_session_id(),
                         refresh_hash="h" * 22, auth_level="normal",
                         auth_time=int(time.time()), device_id="d", device_name="Pixel 8",
                         user_agent="ua", ip="203.0.113.7")


def test_a_worker_reads_the_figure_once_per_period_and_logs_an_outage_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    redis_proc = start_redis(tmp_path / "redis")
    try:
        settings = load_settings({}, {"instance_path": tmp_path / "instance",
                                      "redis_url": redis_proc.url})
        store = SessionStore(connect(settings, redis_proc.url), settings)
        clock = FakeClock()
        collector = LiveSessionsCollector(store, clock=clock)
        assert list(collector.collect()) == []  # no sweep yet: no series
        clock.now += LIVE_SESSIONS_CACHE_SECONDS
        _new_session(store)
        assert store.sweep_sessions().live == 1
        first = collector.current()
        assert first is not None and first.total == 1
        _new_session(store)
        assert store.sweep_sessions().live == 2
        assert collector.current() == first  # cached: no second read inside the period
        clock.now += LIVE_SESSIONS_CACHE_SECONDS
        recorded = collector.current()
        assert isinstance(recorded, LiveSessions) and recorded.total == 2
        assert {m.name: m.samples[0].value for m in collector.collect()} == {
            GAUGE: 2, MEASURED: recorded.measured_ms / 1000}

        port = redis_proc.port
        redis_proc.stop()
        with caplog.at_level(logging.WARNING, logger="latchkey.observability"):
            for _ in range(3):
                clock.now += LIVE_SESSIONS_CACHE_SECONDS
                assert list(collector.collect()) == []
        outage_lines = [r for r in caplog.records
                        if getattr(r, "event", "") == "live_sessions_unavailable"]
        assert len(outage_lines) == 1

        redis_proc = start_redis(tmp_path / "redis-again", port)
        store.sweep_sessions()  # a fresh Redis: no users, so none live
        clock.now += LIVE_SESSIONS_CACHE_SECONDS
        back = collector.current()
        assert back is not None and back.total == 0
    finally:
        redis_proc.stop()
