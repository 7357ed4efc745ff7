"""D4: ``GET /metrics`` is Prometheus text, counts across every gunicorn worker, starts clean;
RED: request durations by URL rule, method and status; build info.

Real gunicorn with several worker processes (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import os
import platform
import secrets
import signal
from importlib.metadata import version
from pathlib import Path

import httpx
from latchkey_server.observability import DURATION_BUCKETS_SECONDS
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

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


def test_counts_from_every_worker_are_added_up(server_factory, wsgi_server: str) -> None:
    server = server_factory(workers=WORKERS, server=wsgi_server)
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


def test_counters_survive_a_dead_worker(server_factory, wsgi_server: str) -> None:
    server = server_factory(workers=2, server=wsgi_server)
    _, tokens = sign_in(server)
    for _ in range(6):
        httpx.get(server.base_url + "/healthz", params={"access_token": tokens["access_token"]})
    workers = [pid for pid in processes_mentioning("latchkey-server")
               if pid != server.proc.pid and _parent(pid) == server.proc.pid]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    # The server replaces it (gunicorn's child_exit or granian's respawn marks the dead
    # pid); counts it made are kept.
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


def families(base_url: str) -> dict[str, Metric]:
    """Return the scraped metric families, parsed by prometheus-client's own parser."""
    return {family.name: family for family in text_string_to_metric_families(scrape(base_url))}


def duration_samples(base_url: str, suffix: str) -> list[Sample]:
    family = families(base_url)["latchkey_http_request_duration_seconds"]
    return [s for s in family.samples
            if s.name == "latchkey_http_request_duration_seconds" + suffix]


def test_request_durations_are_labelled_by_url_rule_never_by_raw_path(server_factory) -> None:
    server = server_factory(workers=WORKERS)
    _, tokens = sign_in(server)
    session_id = secrets.token_urlsafe(16)
    missing = secrets.token_hex(8)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for _ in range(10):  # new connections, spread over the workers
        httpx.get(server.base_url + "/healthz")
    httpx.delete(server.base_url + f"/v1/auth/sessions/{session_id}", headers=bearer)
    httpx.get(server.base_url + f"/no/such/{missing}")
    httpx.request("BREW", server.base_url + "/healthz")
    counts = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
              for s in duration_samples(server.base_url, "_count")}
    assert counts[("/healthz", "GET", "200")] == 10
    assert counts[("/v1/auth/sessions/<session_id>", "DELETE", "404")] == 1
    assert counts[("unmatched", "GET", "404")] == 1
    assert counts[("unmatched", "other", "405")] == 1
    assert counts[("/v1/auth/login", "POST", "200")] == 1
    every_label_value = {v for s in families(server.base_url)[
        "latchkey_http_request_duration_seconds"].samples for v in s.labels.values()}
    assert session_id not in str(every_label_value) and missing not in str(every_label_value)


def test_request_duration_buckets_suit_a_millisecond_service(server_factory) -> None:
    server = server_factory()
    httpx.get(server.base_url + "/healthz")
    buckets = [s for s in duration_samples(server.base_url, "_bucket")
               if s.labels["route"] == "/healthz"]
    bounds = sorted(float(s.labels["le"]) for s in buckets)
    assert bounds == [*DURATION_BUCKETS_SECONDS, float("inf")]
    assert bounds[0] <= 0.001 and 0.05 in bounds  # resolution where the requests are
    total = next(s for s in duration_samples(server.base_url, "_sum")
                 if s.labels["route"] == "/healthz")
    assert 0 < total.value < 5


def test_build_info_names_the_installed_version_once_across_workers(server_factory) -> None:
    server = server_factory(workers=WORKERS)
    for _ in range(10):  # every worker builds its metrics
        httpx.get(server.base_url + "/healthz")
    samples = families(server.base_url)["latchkey_build_info"].samples
    assert len(samples) == 1
    assert samples[0].value == 1
    assert samples[0].labels == {"version": version("latchkey-server"),
                                 "python": platform.python_version()}
