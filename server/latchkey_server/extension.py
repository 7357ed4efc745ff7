"""Hold the server's long-lived services on the Flask app, and fetch them in a request.

Nothing connects at import time: ``init_app`` builds the services once per app (per
worker process under gunicorn, after the fork), and ``services()`` fails with a clear
message if a view runs on an app that skipped it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .config import Settings
from .events import EventLog
from .keys import HmacKeys, KeyRing
from .passwords import Passwords
from .store import SessionStore, connect
from .tokens import TokenService

__all__ = ["EXTENSION_KEY", "Services", "init_app", "services"]

EXTENSION_KEY = "latchkey"


@dataclass
class Services:
    """Everything a view needs: settings, store, tokens, passwords, events."""

    settings: Settings
    store: SessionStore
    keyring: KeyRing
    tokens: TokenService
    passwords: Passwords
    events: EventLog


def init_app(app: Flask, settings: Settings, redis_url: str) -> Services:
    """Build the services for ``app`` and register them under ``app.extensions``."""
    keyring = KeyRing(settings)
    hmac_keys = HmacKeys(settings)
    svc = Services(
        settings=settings,
        store=SessionStore(connect(settings, redis_url), settings),
        keyring=keyring,
        tokens=TokenService(settings, keyring, hmac_keys),
        passwords=Passwords(settings),
        events=EventLog(hmac_keys.log_pseudonym),
    )
    app.extensions[EXTENSION_KEY] = svc
    return svc


def services() -> Services:
    """Return the current app's services, or explain how to set them up."""
    try:
        return current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "Latchkey services are not initialised: build the app with "
            "latchkey_server.create_app()"
        ) from None
