"""D4: ``GET /metrics`` is Prometheus text, counts across every gunicorn worker, starts clean.

Real gunicorn with several worker processes (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.server.ops_support import metric_value, processes_mentioning, sign_in, wait_for

WORKERS = 3


def scrape(base_url: str) -> str:
    r = httpx.get(base_url + "/metrics")
    assert r.status_code == 200
    return r.text


def test_metrics_are_prometheus_text_with_every_event_series(server_factory) -> None:
    server = server_factory()
    r = httpx.get(server.base_url + "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    for event in ("refresh_token_reused", "token_in_url", "binding_changed", "brute_force",
                  "token_guessing", "unknown_session_token", "admin_action"):
        assert f'latchkey_security_events_total{{event="{event}"}} 0.0' in r.text
    assert 'latchkey_rate_limited_total{limit="account_failures"} 0.0' in r.text


def test_counts_from_every_worker_are_added_up(server_factory) -> None:
    server = server_factory(workers=WORKERS)
    _, tokens = sign_in(server)
    leaked = {"access_token": tokens["access_token"]}
    events = 30
    for _ in range(events):
        # A new connection each time, so gunicorn spreads them over its workers.
        assert httpx.get(server.base_url + "/healthz", params=leaked).status_code == 400
    files = list((server.instance_path / "prometheus").glob("*.db"))
    assert len({f.stem.rsplit("_", 1)[-1] for f in files}) > 1, "one worker served them all"
    # Whichever worker answers the scrape, it reports the sum of all of them.
    for _ in range(5):
        text = scrape(server.base_url)
        assert metric_value(text, "latchkey_security_events_total",
                            event="token_in_url") == events


def test_counters_survive_a_dead_worker(server_factory) -> None:
    server = server_factory(workers=2)
    _, tokens = sign_in(server)
    for _ in range(6):
        httpx.get(server.base_url + "/healthz", params={"access_token": tokens["access_token"]})
    workers = [pid for pid in processes_mentioning("latchkey-server")
               if pid != server.proc.pid and _parent(pid) == server.proc.pid]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    # gunicorn replaces it (child_exit marks the dead pid); counts it made are kept.
    assert wait_for(lambda: len([p for p in processes_mentioning("latchkey-server")
                                 if _parent(p) == server.proc.pid and p != workers[0]]) == 2)
    assert wait_for(lambda: metric_value(scrape(server.base_url),
                                         "latchkey_security_events_total",
                                         event="token_in_url") == 6)
    assert "Traceback" not in server.logs()


def test_metrics_start_from_zero_after_a_restart(server_factory, tmp_path: Path) -> None:
    instance = tmp_path / "restarted"
    stale = instance / "prometheus" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from an earlier run")
    server = server_factory(instance_path=instance)
    assert not stale.exists()
    _, tokens = sign_in(server)
    httpx.get(server.base_url + "/healthz", params={"access_token": tokens["access_token"]})
    assert metric_value(scrape(server.base_url), "latchkey_security_events_total",
                        event="token_in_url") == 1
    server.stop()
    again = server_factory(instance_path=instance)
    assert metric_value(scrape(again.base_url), "latchkey_security_events_total",
                        event="token_in_url") == 0


def test_metrics_are_hidden_outside_the_allowed_networks(server_factory) -> None:
    server = server_factory(metrics_allowed_networks="10.0.0.0/8")
    r = httpx.get(server.base_url + "/metrics")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1
