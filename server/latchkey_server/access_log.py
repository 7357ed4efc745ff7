"""Log each request as one JSON line that can never hold a token (D1), under its request id.

werkzeug's and gunicorn's default access lines print the query string, where a leaked
token would sit. Ours prints the path with token-shaped segments masked and query *names*
only, never values, headers or bodies.

Every request gets an id before anything else runs (so the security events the transport
checks raise carry it too): the client's ``X-Request-ID`` when it is safe to log and echo,
otherwise a new one. It is echoed in the response, stamped on every log line of the
request (``logging_setup.RequestContextFilter``), left in the WSGI environ for gunicorn's
access line, and is the ``correlation_id`` of a 500's problem details. A valid W3C
``traceparent`` puts ``trace_id`` and ``span_id`` on the same lines; an invalid one is
ignored, as Trace Context tells a receiver to do, never refused.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

from flask import Flask, Response, g, has_request_context, request

from .logging_setup import REQUEST_IDS_KEY
from .redaction import redact, redact_path

__all__ = [
    "REQUEST_ID_ENVIRON_KEY",
    "REQUEST_ID_HEADER",
    "RequestIds",
    "accept_request_id",
    "current_request_id",
    "elapsed_seconds",
    "init_app",
    "new_request_id",
    "parse_traceparent",
]

_log = logging.getLogger("latchkey.access")

REQUEST_ID_HEADER = "X-Request-ID"
# gunicorn's access line is written after the app returned, outside Flask's context.
REQUEST_ID_ENVIRON_KEY = "latchkey.request_id"

# Conservative on purpose: the id is echoed in a header and written into every log line,
# so nothing that could split a header, a line or a JSON string gets through.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# W3C Trace Context (level 1) section 3.2: version "-" trace-id "-" parent-id "-" flags,
# lowercase hex only. A later version may append "-" and fields we do not know (3.2.4).
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?", re.DOTALL)
_TRACEPARENT_MAX_LENGTH = 512  # nothing legitimate is longer; bounds the regex work
_INVALID_TRACE_ID = "0" * 32
_INVALID_PARENT_ID = "0" * 16


@dataclass(frozen=True, slots=True)
class RequestIds:
    """The ids a request's log lines carry."""

    request_id: str
    trace_id: str | None = None
    span_id: str | None = None


def accept_request_id(value: str | None) -> str:
    """Return the client's request id if it is safe to log and echo, else a new one.

    A token-shaped id (a refresh token fits the character set) is replaced rather than
    masked: the log line and the response should agree on the id.
    """
    if value and _REQUEST_ID.fullmatch(value) and redact(value) == value:
        return value
    return new_request_id()


def new_request_id() -> str:
    """Return a fresh random request id (128 bits, hex)."""
    return os.urandom(16).hex()


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """Return ``(trace_id, parent_id)`` of a valid ``traceparent`` header, else ``None``."""
    if not value or len(value) > _TRACEPARENT_MAX_LENGTH:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    # 3.2.2.1: version ff is invalid; version 00 is exactly the four fields.
    if match["version"] == "ff" or (match["version"] == "00" and match["rest"]):
        return None
    # 3.2.2.3, 3.2.2.4: all-zero trace-id and parent-id are invalid.
    if match["trace_id"] == _INVALID_TRACE_ID or match["parent_id"] == _INVALID_PARENT_ID:
        return None
    return match["trace_id"], match["parent_id"]


def current_request_id() -> str:
    """Return the id of the request being served (a fresh one outside a request)."""
    ids = g.get(REQUEST_IDS_KEY) if has_request_context() else None
    return ids.request_id if ids is not None else new_request_id()


def elapsed_seconds() -> float | None:
    """Return how long the current request has been served, if its start was recorded."""
    started = g.get("request_started")
    return None if started is None else time.perf_counter() - started


def _start() -> None:
    # This runs on every request: the WSGI environ is read directly (werkzeug's header
    # view and each context-proxy lookup cost microseconds apiece on a small host).
    started = time.perf_counter()
    environ = request.environ
    trace = parse_traceparent(environ.get("HTTP_TRACEPARENT"))
    ids = RequestIds(accept_request_id(environ.get("HTTP_X_REQUEST_ID")),
                     *(trace or (None, None)))
    environ[REQUEST_ID_ENVIRON_KEY] = ids.request_id
    context = g._get_current_object()
    context.request_started = started
    setattr(context, REQUEST_IDS_KEY, ids)


def _finish(response: Response) -> Response:
    ids = g.get(REQUEST_IDS_KEY)
    if ids is not None:
        response.headers[REQUEST_ID_HEADER] = ids.request_id
    if _log.isEnabledFor(logging.INFO):
        # One line per request, so the record is made directly: ``Logger.info`` would
        # also walk the stack for a file and line this JSON never prints (findCaller).
        req = request._get_current_object()  # type: ignore[attr-defined]
        started = g.get("request_started")
        elapsed = 0.0 if started is None else time.perf_counter() - started
        record = _log.makeRecord(
            _log.name, logging.INFO, "", 0, "request", None, None,
            extra={
                "event": "http_request",
                "lk_method": req.method,
                "lk_path": redact_path(req.path, req.query_string.decode("latin-1")),
                "lk_status": response.status_code,
                "lk_duration_ms": round(elapsed * 1000, 2),
                "lk_ip": req.remote_addr,
            },
        )
        _log.handle(record)
    return response


def init_app(app: Flask) -> None:
    """Register the request ids and the access log on ``app``.

    The ids are assigned by the first ``before_request`` hook, ahead of the transport
    checks ``hardening.py`` registered earlier, so their log lines carry the id too.
    """
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
