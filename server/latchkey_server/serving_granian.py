"""Serve the app with granian, a compiled HTTP server, as the gunicorn path does (issue 18).

The shared preparation is ``serving.py``'s: keys and the embedded Redis are made once in
the parent before granian spawns its workers, the metrics directory is emptied and named
in the environment the workers inherit, and the session policy is published once. What
differs from gunicorn, and how each gunicorn guarantee is kept:

- Logging: granian's own logger (``_granian``) writes through the app's ``JsonFormatter``
  and ``RedactingFilter``; granian's access log is off (the app writes its own redacted
  JSON access log), so no line carries a query value, a header or a body.
- Bounded work per request (H2): granian parses HTTP in Rust with a read buffer of its
  own size and no limit on one request line or header field, so ``BoundedRequest`` refuses,
  before the app runs, what gunicorn would have refused (``limit_request_line`` 4094,
  ``limit_request_field_size`` 8190): the same limits, whichever server runs.
- Metrics: granian's workers are processes; a worker granian replaces is marked dead for
  prometheus-client (gunicorn's ``child_exit`` hook), so its live gauges disappear.
- Dead workers are respawned (``respawn_failed_workers``); granian has no per-request
  worker timeout, so a hung worker is not replaced (docs/OPERATIONS.md says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .config import Settings
from .errors import InvalidRequest
from .logging_setup import configure_logging
from .serving import prepare_metrics_dir, prepare_shared_state

__all__ = ["MAX_HEADER_FIELD", "MAX_REQUEST_LINE", "BoundedRequest", "create_bounded_app",
           "granian_options", "serve_granian"]

# gunicorn's limits, which the gunicorn path sets (serving.gunicorn_options).
MAX_REQUEST_LINE = 4094
MAX_HEADER_FIELD = 8190

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _request_line_length(environ: dict[str, Any]) -> int:
    """Return the length of the request line as the client sent it (method, target, proto)."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        query = environ.get("QUERY_STRING", "")
        target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
    return (len(environ.get("REQUEST_METHOD", "")) + 1 + len(target) + 1
            + len(environ.get("SERVER_PROTOCOL", "")))


def _longest_header_field(environ: dict[str, Any]) -> int:
    """Return the length of the longest ``Name: value`` header field of the request."""
    longest = 0
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key[5:] if key.startswith("HTTP_") else key
            longest = max(longest, len(name) + 2 + len(str(value)))
    return longest


class BoundedRequest:
    """Refuse a request whose line or a header field is longer than gunicorn allows.

    The refusal is the API's ``invalid_request`` problem (400, like gunicorn's), written
    here without Flask: nothing of the oversize request reaches the app or its logs.
    """

    def __init__(self, app: WsgiApp) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _request_line_length(environ) > MAX_REQUEST_LINE:
            return self._refuse(start_response, "The request line is too long")
        if _longest_header_field(environ) > MAX_HEADER_FIELD:
            return self._refuse(start_response, "A request header field is too long")
        return self._app(environ, start_response)

    @staticmethod
    def _refuse(start_response: Callable[..., Any], detail: str) -> list[bytes]:
        error = InvalidRequest(detail)
        body = json.dumps(error.body()).encode()
        start_response(f"{error.status} Bad Request",
                       [("Content-Type", "application/problem+json"),
                        ("Content-Length", str(len(body))), ("Connection", "close")])
        return [body]


def create_bounded_app() -> WsgiApp:
    """The app factory granian's workers call: ``create_app()`` behind ``BoundedRequest``."""
    from . import create_app

    return BoundedRequest(create_app())


def _log_dictconfig(settings: Settings) -> dict[str, Any]:
    """granian's logging: its own lines as JSON, redacted, at warning and above."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "latchkey_server.logging_setup.JsonFormatter"}},
        "filters": {"redact": {"()": "latchkey_server.redaction.RedactingFilter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                              "formatter": "json", "filters": ["redact"]}},
        "loggers": {
            "_granian": {"handlers": ["json"], "level": "WARNING", "propagate": False},
            "granian.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def granian_options(host: str, port: int, workers: int, threads: int,
                    settings: Settings) -> dict[str, Any]:
    """Return granian's settings, gunicorn's mapped where granian has an equivalent."""
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    return {
        "target": "latchkey_server.serving_granian:create_bounded_app",
        "factory": True,
        "address": host,
        "port": port,
        "interface": Interfaces.WSGI,
        "workers": workers,
        "blocking_threads": threads,
        # granian keeps a connection open or not; it has no keep-alive idle time.
        "http1_settings": HTTP1Settings(keep_alive=settings.keepalive_seconds > 0),
        # On SIGTERM a worker gets this long to finish, then is killed (graceful_timeout).
        "workers_kill_timeout": settings.graceful_timeout_seconds,
        # A worker that dies is replaced, as gunicorn's arbiter does.
        "respawn_failed_workers": True,
        "log_level": LogLevels.warning,
        "log_access": False,
        "log_dictconfig": _log_dictconfig(settings),
    }


def _server_class() -> Any:
    """granian's process server, marking each worker it replaces dead for prometheus."""
    from granian.server import MPServer
    from prometheus_client import multiprocess

    class _LatchkeyGranian(MPServer):
        def _respawn_workers(self, workers: Any, *args: Any, **kwargs: Any) -> None:
            pids = [self.wrks[idx]._id() for idx in workers]
            super()._respawn_workers(workers, *args, **kwargs)
            for pid in pids:
                if pid is not None:
                    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    return _LatchkeyGranian


def serve_granian(settings: Settings, host: str, port: int, workers: int, threads: int) -> None:
    """Serve with granian until SIGTERM or SIGINT stops it; then stop the embedded Redis."""
    configure_logging(settings.log_level)  # the parent's own lines are JSON too
    embedded = prepare_shared_state(settings)
    prepare_metrics_dir(settings)  # before prometheus-client is imported (_server_class)
    try:
        _server_class()(**granian_options(host, port, workers, threads, settings)).serve()
    finally:
        if embedded:
            embedded.stop()
