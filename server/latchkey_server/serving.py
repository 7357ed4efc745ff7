"""Serve the app: gunicorn for real use, werkzeug's server for development.

The embedded Redis and the key material are prepared once in the parent process before
gunicorn forks its workers, so workers share one store and never race to create keys.
Every line either server writes is JSON (``RedactingGunicornLogger`` formats gunicorn's
error and access lines like the app's). Neither server may print a token: gunicorn's
access log (off by default, on with ``LATCHKEY_GUNICORN_ACCESS_LOG``) goes through a
logger that keeps only a whitelist of atoms with query values masked (it would otherwise
print the query string, and its ``{header}i`` / ``{variable}e`` atoms reach
``Authorization``); werkzeug's request log is replaced by ours. Bodies are never logged
by either.

Metrics: gunicorn workers are processes, so prometheus-client runs in multiprocess mode.
``prepare_metrics_dir`` empties ``PROMETHEUS_MULTIPROC_DIR`` and sets it before any worker
(or prometheus-client import) exists, and the ``child_exit`` hook marks a dead worker's
files so its live gauges disappear (counters are kept, as Prometheus expects).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from werkzeug.serving import WSGIRequestHandler, run_simple

from .access_log import REQUEST_ID_ENVIRON_KEY
from .config import Settings
from .embedded import EmbeddedRedis
from .keys import ensure_key_material
from .logging_setup import JsonFormatter, configure_logging
from .redaction import RedactingFilter, redact, redact_path
from .redis_connection import resolve_redis_url

__all__ = [
    "RedactingGunicornLogger",
    "gunicorn_options",
    "prepare_metrics_dir",
    "prepare_shared_state",
    "publish_session_policy",
    "serve_dev",
    "serve_gunicorn",
]

_log = logging.getLogger("latchkey.serving")


# gunicorn's "combined" format minus the referer (a URL, so it may carry a token).
ACCESS_LOG_FORMAT = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(a)s" %(M)sms'

# The only atoms a format may use; every other one (``{header}i`` holds Authorization,
# ``{variable}e`` holds HTTP_AUTHORIZATION, QUERY_STRING and RAW_URI) renders as "-".
_SAFE_ATOMS = frozenset("hltsmHbBaTDMLp")


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger with query values, tokens and headers kept out of access lines.

    Its lines are JSON like the app's (``logging_setup.JsonFormatter``): the access line
    keeps its text (the whitelisted atoms) as ``msg`` and adds the fields and request id.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(JsonFormatter())
                handler.addFilter(RedactingFilter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        status = str(atoms.get("s", ""))
        extra = {"event": "gunicorn_access", "lk_method": environ.get("REQUEST_METHOD", ""),
                 "lk_path": redact_path(environ.get("PATH_INFO", ""),
                                        environ.get("QUERY_STRING", "")),
                 "lk_status": int(status) if status.isdigit() else status,
                 "lk_bytes": atoms.get("B"), "lk_ip": atoms.get("h"),
                 "lk_duration_ms": round(request_time.total_seconds() * 1000, 2)}
        request_id = environ.get(REQUEST_ID_ENVIRON_KEY)
        if request_id:
            extra["request_id"] = request_id
        # A format with a bad atom is rendered as its plain text by RedactingFilter.
        self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms),
                             extra=extra)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        full = super().atoms(resp, req, environ, request_time)
        atoms = {key: full[key] for key in _SAFE_ATOMS if key in full}
        path = redact_path(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        method, proto = environ.get("REQUEST_METHOD", ""), environ.get("SERVER_PROTOCOL", "")
        atoms["r"] = f"{method} {path} {proto}"
        atoms["U"] = redact_path(environ.get("PATH_INFO", ""))
        atoms["q"] = ""
        atoms["u"] = "-"  # gunicorn decodes Basic credentials from Authorization here
        atoms["f"] = "-"
        atoms["a"] = redact(str(atoms.get("a", "-")))
        return atoms

    # Every level is scrubbed, not only errors: gunicorn's own hooks log request paths
    # (with session ids, maybe tokens) at debug. Arguments are formatted first, so a value
    # passed as an argument is scrubbed too.
    def critical(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().critical(_scrub(msg, args), **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().error(_scrub(msg, args), **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().warning(_scrub(msg, args), **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().info(_scrub(msg, args), **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().debug(_scrub(msg, args), **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().exception(_scrub(msg, args), **kwargs)


def _scrub(msg: Any, args: tuple[Any, ...]) -> str:
    """Format a gunicorn log message, then mask tokens and session-id path segments."""
    text = str(msg)
    if args:
        try:
            text = text % args
        except (TypeError, ValueError):
            text = " ".join([text, *map(str, args)])
    return redact_path(redact(text))


def prepare_shared_state(settings: Settings) -> EmbeddedRedis | None:
    """Create keys and (if no Redis URL is set) start the embedded Redis for all workers."""
    ensure_key_material(settings)
    # Workers build their app from the environment, which lacks the --host/--port flags
    # the quick start's issuer is derived from: hand them the issuer itself.
    os.environ["LATCHKEY_ISSUER"] = settings.issuer
    url, embedded = resolve_redis_url(settings)
    if embedded is not None:
        # Workers build their app from the environment: point them at this one Redis.
        os.environ["LATCHKEY_REDIS_URL"] = url
    publish_session_policy(settings, url)
    return embedded


def publish_session_policy(settings: Settings, url: str) -> None:
    """Publish the session policy resource servers apply (``lk:{policy}``), once per start.

    A store that does not answer now is not fatal: each worker publishes it again with its
    first session (``SessionStore.publish_policy_with_first_session``).
    """
    # Here, not at the top: the store pulls in Flask and redis-py, which the serving
    # parent otherwise never needs before gunicorn forks.
    from .keys import HmacKeys
    from .redis_connection import connect
    from .store import SessionStore

    client = connect(settings, url)
    try:
        keys = HmacKeys(settings)
        if not SessionStore(client, settings).publish_policy(keys.log_pseudonym,
                                                             keys.dpop_nonce):
            _log.warning("session policy not published: the store is unavailable; workers "
                         "publish it with their first session",
                         extra={"event": "policy_not_published"})
    finally:
        client.close()


def prepare_metrics_dir(settings: Settings) -> Path:
    """Empty the prometheus-client multiprocess directory and point workers at it.

    Left-over files from a previous run would be merged into this run's counters, so the
    directory is cleaned at every start. Must run before prometheus-client is imported.
    """
    path = settings.metrics_dir or settings.instance_path / "prometheus"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus-client a worker died (gunicorn ``child_exit`` hook, in the master)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


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
        # A worker silent this long is killed and replaced (a stuck Redis call cannot
        # hold it: Redis calls time out after a few seconds and fail closed).
        "timeout": settings.worker_timeout_seconds,
        # On SIGTERM, workers stop accepting and finish in-flight requests for this long.
        "graceful_timeout": settings.graceful_timeout_seconds,
        "keepalive": settings.keepalive_seconds,
        # The app always writes its own redacted JSON access log; gunicorn's is optional.
        "accesslog": "-" if settings.gunicorn_access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "child_exit": _child_exit,
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
    configure_logging(settings.log_level)  # the master's own lines are JSON too
    embedded = prepare_shared_state(settings)
    prepare_metrics_dir(settings)
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
