"""Feed security events to a Redis stream and everything countable to Prometheus (D4).

``EventLog.security()`` is the one place security events are raised; it already writes
the structured log line. ``init_app`` adds two sinks to it:

- the Redis stream ``store.SECURITY_STREAM_KEY``, capped with ``MAXLEN ~``, that a
  security team reads with a consumer group (docs/OPERATIONS.md shows how);
- the counter ``latchkey_security_events_total{event}``.

A failing stream write never fails the request that raised the event (the event is
already in the log); it is counted in ``latchkey_security_stream_errors_total``.

Metrics are prometheus-client counters. Under gunicorn each worker is a process, so
``serving.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts and ``/metrics``
merges the per-process files; without it (development server, tests in-process) the
default registry of this one process is served. Counters are module-level because
prometheus-client's registry is process-wide by design; they hold no connection.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from .errors import StoreUnavailable
from .events import SECURITY_EVENTS
from .extension import Services

__all__ = [
    "HTTP_RESPONSES",
    "RATE_LIMITED",
    "SECURITY_EVENTS_TOTAL",
    "SECURITY_STREAM_ERRORS",
    "SecurityStreamSink",
    "init_app",
    "render_metrics",
]

_log = logging.getLogger("latchkey.observability")

SECURITY_EVENTS_TOTAL = Counter(
    "latchkey_security_events_total", "Security events raised, by event name.", ["event"])
SECURITY_STREAM_ERRORS = Counter(
    "latchkey_security_stream_errors_total",
    "Security events that could not be added to the Redis stream (they are still logged).")
RATE_LIMITED = Counter(
    "latchkey_rate_limited_total", "Requests refused with 429 by a D2 limit, by limit.",
    ["limit"])
HTTP_RESPONSES = Counter(
    "latchkey_http_responses_total", "HTTP responses by status code.", ["status"])

# Series that exist from the start at 0, so rate() and absent-based alerts work at once.
for _event in sorted(SECURITY_EVENTS):
    SECURITY_EVENTS_TOTAL.labels(event=_event)
for _limit in ("account_failures", "login_ip_failures", "register_ip_failures",
               "step_up_failures", "step_up_ip_failures", "invalid_token_ip"):
    RATE_LIMITED.labels(limit=_limit)


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
        entry = {"event": event,
                 "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                     "+00:00", "Z")}
        entry.update({k: _stream_value(v) for k, v in fields.items() if v is not None})
        try:
            self._store.append_security_event(entry, self._max_length)
        except StoreUnavailable:
            SECURITY_STREAM_ERRORS.inc()
            _log.warning("security event not added to the stream: store unavailable",
                         extra={"event": "security_stream_error", "lk_security_event": event})


def _count_security_event(event: str, fields: dict[str, Any]) -> None:
    SECURITY_EVENTS_TOTAL.labels(event=event).inc()


def _count_response(response: Response) -> Response:
    HTTP_RESPONSES.labels(status=str(response.status_code)).inc()
    return response


def render_metrics() -> Response:
    """Return the Prometheus exposition of this process, or of all workers under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})


def init_app(app: Flask, svc: Services) -> None:
    """Attach the stream and metric sinks to the event log and count every response."""
    svc.events.add_sink(SecurityStreamSink(svc))
    svc.events.add_sink(_count_security_event)
    app.after_request(_count_response)
