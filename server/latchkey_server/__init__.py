"""Latchkey token server: build the Flask app with :func:`create_app`."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import errors, extension, hardening, oauth, observability, proofs, throttle
from .access_log import init_app as init_access_log
from .api import account, admin_sessions, auth, ops, sessions, wellknown
from .config import load_settings
from .keys import ensure_key_material
from .logging_setup import configure_logging
from .redis_connection import resolve_redis_url

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``LATCHKEY_*`` environment, then ``test_config``."""
    settings = load_settings(overrides=test_config)
    configure_logging(settings.log_level)
    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ensure_key_material(settings)
    redis_url, embedded = resolve_redis_url(settings)
    if embedded is not None:
        # Kept with the app so it lives as long as the app (and is stopped at exit).
        app.extensions["latchkey_embedded_redis"] = embedded
    svc = extension.init_app(app, settings, redis_url)
    errors.init_app(app)
    proofs.init_app(app, svc.dpop)
    hardening.init_app(app, settings)
    init_access_log(app)
    for module in (auth, sessions, account, wellknown, ops):
        app.register_blueprint(module.bp)
    if settings.admin_http:
        # Off by default: a surface that is not served cannot be probed, and /openapi.json
        # lists only what is (the CLI covers the same operations).
        app.register_blueprint(admin_sessions.bp)
    oauth.init_app(app, svc)
    observability.init_app(app, svc)
    throttle.init_app(app, svc, redis_url)  # after the blueprints: it wraps their views
    if settings.trusted_proxy_count:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_count,
            x_proto=settings.trusted_proxy_count, x_host=settings.trusted_proxy_count,
        )
    return app
