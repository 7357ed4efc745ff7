"""Log each request as one JSON line that can never hold a token (D1).

werkzeug's and gunicorn's default access lines print the query string, where a leaked
token would sit. Ours prints the path with token-shaped segments masked and query *names*
only, never values, headers or bodies.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from .redaction import redact_path

__all__ = ["init_app"]

_log = logging.getLogger("latchkey.access")


def _start() -> None:
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    if _log.isEnabledFor(logging.INFO):
        started = g.get("request_started", time.perf_counter())
        _log.info(
            "request",
            extra={
                "event": "http_request",
                "lk_method": request.method,
                "lk_path": redact_path(request.path, request.query_string.decode("latin-1")),
                "lk_status": response.status_code,
                "lk_duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "lk_ip": request.remote_addr,
            },
        )
    return response


def init_app(app: Flask) -> None:
    """Register the access log on ``app``."""
    app.before_request(_start)
    app.after_request(_finish)
