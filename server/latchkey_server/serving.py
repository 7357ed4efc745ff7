"""Serve the app: gunicorn for real use, werkzeug's server for development.

The embedded Redis and the key material are prepared once in the parent process before
gunicorn forks its workers, so workers share one store and never race to create keys.
Neither server may print a token: gunicorn's access log goes through a redacting logger
(it would otherwise print the query string), werkzeug's request log is replaced by ours.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from werkzeug.serving import WSGIRequestHandler, run_simple

from .config import Settings
from .embedded import EmbeddedRedis
from .keys import ensure_key_material
from .redaction import redact, redact_path

__all__ = ["RedactingGunicornLogger", "prepare_shared_state", "serve_dev", "serve_gunicorn"]


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger with query values, tokens and headers kept out of access lines."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        path = redact_path(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        method, proto = environ.get("REQUEST_METHOD", ""), environ.get("SERVER_PROTOCOL", "")
        atoms["r"] = f"{method} {path} {proto}"
        atoms["U"] = redact(environ.get("PATH_INFO", ""))
        atoms["q"] = ""
        atoms["f"] = redact(atoms.get("f", ""))
        # Request headers ({name}i) can carry Authorization: drop them all.
        for key in list(atoms):
            if key.startswith("{") and key.endswith("}i"):
                atoms[key] = "-"
        return atoms

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().error(redact(str(msg)), *args, **kwargs)


def prepare_shared_state(settings: Settings) -> EmbeddedRedis | None:
    """Create keys and (if no Redis URL is set) start the embedded Redis for all workers."""
    ensure_key_material(settings)
    if settings.redis_url:
        return None
    embedded = EmbeddedRedis(settings.instance_path / "redis")
    os.environ["LATCHKEY_REDIS_URL"] = embedded.start()
    return embedded


class _LatchkeyGunicorn(BaseApplication):
    """Run ``create_app()`` under gunicorn with options set in code, not a config file."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        return create_app()


def gunicorn_options(host: str, port: int, workers: int, threads: int,
                     settings: Settings) -> dict[str, Any]:
    """Return the production gunicorn settings (see docs/OPERATIONS.md)."""
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,  # the app writes its own redacted access log
        "errorlog": "-",
        "loglevel": "warning",
        "logger_class": RedactingGunicornLogger,
        "preload_app": False,
        "forwarded_allow_ips": "*" if settings.trusted_proxy_count else "",
        "proc_name": "latchkey-server",
        "limit_request_line": 4094,
        "limit_request_field_size": 8190,
    }


def serve_gunicorn(settings: Settings, host: str, port: int, workers: int, threads: int) -> None:
    """Serve with gunicorn until a signal stops it; then stop the embedded Redis."""
    embedded = prepare_shared_state(settings)
    try:
        _LatchkeyGunicorn(gunicorn_options(host, port, workers, threads, settings)).run()
    finally:
        if embedded:
            embedded.stop()


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without its version banner or query-printing request log."""

    server_version = "latchkey"
    sys_version = ""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The app's access log already recorded this request, without its query."""


def serve_dev(settings: Settings, host: str, port: int) -> None:
    """Serve with werkzeug's threaded development server."""
    embedded = prepare_shared_state(settings)
    from . import create_app

    try:
        run_simple(host, port, create_app(), threaded=True, request_handler=_QuietHandler)
    finally:
        if embedded:
            embedded.stop()
