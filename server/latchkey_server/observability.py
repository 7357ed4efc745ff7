"""Feed security events to a Redis stream and everything countable to Prometheus (D4).

``EventLog.security()`` is the one place security events are raised; it already writes
the structured log line. ``init_app`` adds two sinks to it:

- the Redis streams ``store.SECURITY_STREAM_KEY`` (the alerts, ``events.ALERT_EVENTS``)
  and ``store.SECURITY_NOISE_STREAM_KEY`` (what unauthenticated traffic can raise), each
  capped with ``MAXLEN ~``, that a security team reads with a consumer group
  (docs/OPERATIONS.md shows how): a flood of noise cannot evict an alert;
- the counter ``latchkey_security_events_total{event}``, of every event raised.

It also gives the event log its per-source budget, counted in the store (events.py).

Every response is also counted and timed (RED): ``latchkey_http_responses_total{status}``
and the histogram ``latchkey_http_request_duration_seconds{route,method,status}``, whose
``_count`` is the request total by route, method and status. ``route`` is the Flask URL
rule (``/v1/auth/sessions/<session_id>``), never the raw path, so no identifier becomes a
label and the series stay bounded; a path no rule matches is ``unmatched``, a method
outside the standard ones ``other``. ``latchkey_build_info{version,python}`` is 1.

``latchkey_live_sessions`` and ``latchkey_live_sessions_measured_timestamp_seconds`` are
what the last ``latchkey-server sessions sweep`` counted and when (Redis server time): no
request counts sessions; the sweep visits every record anyway and writes the total to one
key (``store.LIVE_SESSIONS_KEY``). ``LiveSessionsCollector`` reads that key at scrape time,
at most once per ``LIVE_SESSIONS_CACHE_SECONDS`` per worker, so it is one series whichever
worker answers; before the first sweep, or while Redis is down, it emits nothing and the
rest of the scrape is served as usual.

A failing stream write never fails the request that raised the event (the event is
already in the log); it is counted in ``latchkey_security_stream_errors_total``.

Metrics are prometheus-client counters. Under gunicorn each worker is a process, so
prometheus-client runs in multiprocess mode: ``serving.py`` sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts and ``/metrics`` merges the per-process files; without it
(development server, tests in-process) the registry of this one process is served.
prometheus-client chooses its mode when it is first imported, and this package is imported
by the ``latchkey-server`` command before ``serving.py`` can set the directory; so
prometheus-client is imported, and the counters built, only on first use in a process
(``metrics()``), never at import time.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, Response, current_app, request

from .access_log import elapsed_seconds
from .errors import StoreUnavailable
from .events import ALERT_EVENTS, SECURITY_EVENTS
from .extension import Services
from .serialise import rfc3339
from .store import LiveSessions, SessionStore

if TYPE_CHECKING:  # prometheus-client is imported on first use only (see the docstring)
    from prometheus_client.metrics_core import Metric

__all__ = ["DURATION_BUCKETS_SECONDS", "LIVE_SESSIONS_CACHE_SECONDS", "UNMATCHED_ROUTE",
           "LiveSessionsCollector", "Metrics", "SecurityStreamSink", "init_app", "metrics",
           "render_metrics"]

_log = logging.getLogger("latchkey.observability")

RATE_LIMIT_LABELS = ("account_failures", "known_device_failures", "login_ip_failures",
                     "taken_name_failures", "register_ip_failures",
                     "step_up_failures", "step_up_ip_failures", "invalid_token_ip")

# Most requests take 1-50 ms (a Redis round trip or two); fine buckets there. Logins and
# registrations hash with argon2 (tens to hundreds of ms) and a Redis call gives up after
# about 2 s, so the tail goes to 5 s.
DURATION_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                            0.5, 1.0, 2.5, 5.0)

UNMATCHED_ROUTE = "unmatched"
# How long a worker serves the live-session figure it read before reading it again: the
# figure changes once per sweep, and a scrape every few seconds from several Prometheus
# servers must not become a Redis read each.
LIVE_SESSIONS_CACHE_SECONDS = 10.0
_LIVE_SESSIONS_EXTENSION = "latchkey.live_sessions"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _build_version() -> str:
    try:
        return distribution_version("latchkey-server")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class Metrics:
    """The Prometheus counters of this process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.security_events = Counter(
            "latchkey_security_events_total", "Security events raised, by event name.",
            ["event"])
        self.security_stream_errors = Counter(
            "latchkey_security_stream_errors_total",
            "Security events that could not be added to the Redis stream (still logged).")
        self.rate_limited = Counter(
            "latchkey_rate_limited_total", "Requests refused with 429 by a D2 limit.",
            ["limit"])
        self.http_responses = Counter(
            "latchkey_http_responses_total", "HTTP responses by status code.", ["status"])
        self.request_duration = Histogram(
            "latchkey_http_request_duration_seconds",
            "Time from the first to the last hook of a request, by URL rule, method, status.",
            ["route", "method", "status"], buckets=DURATION_BUCKETS_SECONDS)
        # Every worker reports the same labels; "max" merges them into one series.
        self.build_info = Gauge(
            "latchkey_build_info", "The running server's version and Python; always 1.",
            ["version", "python"], multiprocess_mode="max")
        self.build_info.labels(version=_build_version(),
                               python=platform.python_version()).set(1)
        # labels() takes a lock and builds a key on every call; the label sets of the
        # per-request series are few and fixed (rules x methods x statuses), so their
        # children are kept. Two threads racing on a new key get the same child.
        self._request_series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Series that exist from the start at 0, so rate() and absent() alerts work at once.
        for event in sorted(SECURITY_EVENTS):
            self.security_events.labels(event=event)
        for limit in RATE_LIMIT_LABELS:
            self.rate_limited.labels(limit=limit)

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count one response and record how long it took."""
        key = (route, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = (self.http_responses.labels(status=status),
                      self.request_duration.labels(route=route, method=method, status=status))
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> Metrics:
    """Return this process's counters, building them on first use (see the docstring).

    Under a lock: gthread workers serve their first requests concurrently, and two threads
    building ``Metrics`` at once register the same series twice (``DuplicateTimeseries``,
    a 500 on a first request; ``functools.cache`` does not prevent that).
    """
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def _stream_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SecurityStreamSink:
    """Append each security event to the capped Redis stream."""

    def __init__(self, svc: Services) -> None:
        self._store = svc.store
        self._max_length = svc.settings.security_stream_max_length

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        entry = {"event": event, "ts": rfc3339(timespec="milliseconds")}
        entry.update({k: _stream_value(v) for k, v in fields.items() if v is not None})
        alert = event in ALERT_EVENTS or fields.get("alert") is True
        try:
            self._store.append_security_event(entry, self._max_length, alert=alert)
        except StoreUnavailable:
            metrics().security_stream_errors.inc()
            _log.warning("security event not added to the stream: store unavailable",
                         extra={"event": "security_stream_error", "lk_security_event": event})


def _count_security_event(event: str) -> None:
    metrics().security_events.labels(event=event).inc()


def _count_response(response: Response) -> Response:
    served = request._get_current_object()  # type: ignore[attr-defined]  # one lookup
    rule, method = served.url_rule, served.method
    metrics().observe_request(rule.rule if rule is not None else UNMATCHED_ROUTE,
                              method if method in _METHODS else "other",
                              str(response.status_code), elapsed_seconds() or 0.0)
    return response


class LiveSessionsCollector:
    """Serve the live-session total the last sweep recorded, read at most every 10 s.

    A prometheus-client custom collector: ``render_metrics`` registers it on the registry
    it builds for each scrape, so in multiprocess mode it is not in the per-worker files
    and shows as one series, not one per worker. The store read is cached for
    ``cache_seconds`` (a failed read too: a scrape during an outage must not wait on
    Redis's timeout each time); a failure is logged once, then again only after Redis
    has answered in between.
    """

    def __init__(self, store: SessionStore, *,
                 cache_seconds: float = LIVE_SESSIONS_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        # gthread workers answer scrapes on several threads: one of them reads, the rest wait.
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._value: LiveSessions | None = None
        self._failing = False

    def current(self) -> LiveSessions | None:
        """Return the recorded figure (``None``: no sweep yet, or unreadable), cached."""
        with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._cache_seconds:
                return self._value
            self._read_at = now
            try:
                self._value = self._store.live_sessions()
            # RedisClusterException ("no reachable node": a whole cluster down) is not a
            # RedisError, and store._store_call does not map it; a scrape must not fail.
            except (StoreUnavailable, redis.exceptions.RedisError,
                    redis.exceptions.RedisClusterException, ValueError) as exc:
                self._value = None
                if not self._failing:
                    _log.warning("live-session gauge not served: the store did not answer",
                                 extra={"event": "live_sessions_unavailable",
                                        "error": type(exc).__name__})
                self._failing = True
            else:
                self._failing = False
            return self._value

    def collect(self) -> Iterator[Metric]:
        """Yield the two gauges, or nothing when there is no figure to serve."""
        from prometheus_client.core import GaugeMetricFamily

        value = self.current()
        if value is None:
            return
        yield GaugeMetricFamily(
            "latchkey_live_sessions",
            "Live sessions the last sessions sweep counted (Redis server time).",
            value=value.total)
        yield GaugeMetricFamily(
            "latchkey_live_sessions_measured_timestamp_seconds",
            "When the last sessions sweep recorded latchkey_live_sessions (Unix time, s).",
            value=value.measured_ms / 1000)


def render_metrics() -> Response:
    """Return the Prometheus exposition of this process, or of all workers under gunicorn."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client import multiprocess as prometheus_multiprocess

    metrics()  # the zero-valued series exist even before the first event
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is a collector of its own series
    live_sessions = current_app.extensions.get(_LIVE_SESSIONS_EXTENSION)
    if live_sessions is not None:
        registry.register(live_sessions)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, svc: Services) -> None:
    """Attach the stream and metric sinks to the event log and count every response."""
    svc.events.add_sink(SecurityStreamSink(svc))
    svc.events.add_counter(_count_security_event)
    svc.events.set_budget(svc.store.count_security_event,
                          svc.settings.security_events_per_source,
                          svc.settings.security_event_window_seconds)
    app.after_request(_count_response)
    app.extensions[_LIVE_SESSIONS_EXTENSION] = LiveSessionsCollector(svc.store)
