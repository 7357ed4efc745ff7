"""Configure the server's logs as one JSON object per line, with tokens masked.

Structured lines are what a security team can search and alert on (D1, D4). Fields given
with ``extra={"event": ..., "lk_<name>": ...}`` become top-level JSON keys without the
``lk_`` prefix, so call sites say exactly what they log and nothing more.

Every line logged while a request is served carries that request's ``request_id`` (and
``trace_id``/``span_id`` when the client sent a valid W3C ``traceparent``), added by
``RequestContextFilter`` from what ``access_log.py`` put on ``g``; gunicorn's own lines
use the same formatter (``serving.py::RedactingGunicornLogger``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

from .redaction import RedactingFilter, redact

__all__ = ["REQUEST_IDS_KEY", "JsonFormatter", "RequestContextFilter", "configure_logging",
           "json_handler"]

# Where access_log.py keeps the current request's ``RequestIds`` on ``flask.g``.
REQUEST_IDS_KEY = "lk_request_ids"

_RESERVED = ("event", "correlation_id", "request_id", "trace_id", "span_id")

# One encoder for every line: ``json.dumps`` with any option builds a new encoder per call.
_ENCODE = json.JSONEncoder(default=str).encode


class _Timestamps:
    """ISO 8601 UTC timestamps with milliseconds, the date and time built once a second.

    ``datetime.fromtimestamp(...).isoformat()`` per line is a measurable share of a line's
    cost when every request writes one; the text is the same (microseconds rounded as
    ``datetime`` rounds them, then cut to milliseconds).
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        # One tuple, replaced whole, so a thread never pairs a second with another's text.
        self._cached: tuple[int, str] = (-1, "")

    def format(self, created: float) -> str:
        whole = int(created)
        micros = round((created - whole) * 1e6)
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        cached = self._cached
        if cached[0] != whole:
            cached = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
            self._cached = cached
        return f"{cached[1]}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """Format a record as a single JSON line."""

    def __init__(self) -> None:
        super().__init__()
        self._timestamps = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._timestamps.format(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # several gunicorn workers write to one stream
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in _RESERVED:
            if key in fields:
                doc[key] = fields[key]
        for key, value in fields.items():
            if key.startswith("lk_"):
                doc[key[3:]] = value
        if record.exc_info:
            # The traceback stays in the server's log only, masked like everything else.
            doc["exc"] = redact(self.formatException(record.exc_info))
        return _ENCODE(doc)


class RequestContextFilter(logging.Filter):
    """Stamp a record logged during a request with that request's ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            ids = g.get(REQUEST_IDS_KEY)
            if ids is not None and not hasattr(record, "request_id"):
                record.request_id = ids.request_id
                if ids.trace_id:
                    record.trace_id = ids.trace_id
                    record.span_id = ids.span_id
        return True


def json_handler(stream: Any = None) -> logging.Handler:
    """Return a stream handler writing masked JSON lines with request ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send the ``latchkey`` and ``werkzeug`` loggers to one JSON handler, idempotently."""
    root = logging.getLogger("latchkey")
    if any(getattr(h, "_latchkey", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = json_handler(stream)
    handler._latchkey = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    # werkzeug's own request log is replaced by ours (it prints query strings); its
    # warnings go to the same JSON handler instead of Python's plain-text last resort.
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addFilter(RedactingFilter())
    werkzeug.setLevel(logging.WARNING)
    if not any(getattr(h, "_latchkey", False) for h in werkzeug.handlers):
        werkzeug.addHandler(handler)
        werkzeug.propagate = False
    # Libraries' warnings (redis-py, Flask-Limiter) would reach Python's plain-text last
    # resort; unless whoever embeds the app configured the root logger, they are JSON too.
    if not logging.root.handlers:
        logging.root.addHandler(handler)
