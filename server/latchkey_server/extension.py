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
from .proofs import DPoPPolicy
from .redis_connection import connect
from .sessions import SessionService
from .store import SessionStore
from .tokens import TokenService

__all__ = ["EXTENSION_KEY", "Services", "init_app", "services"]

EXTENSION_KEY = "latchkey"


@dataclass
class Services:
    """Everything a view needs: settings, the session service, store, tokens, passwords,
    events, the DPoP policy. Sessions change only through ``sessions`` (the session service)."""

    settings: Settings
    store: SessionStore
    keyring: KeyRing
    tokens: TokenService
    passwords: Passwords
    events: EventLog
    sessions: SessionService
    dpop: DPoPPolicy


def init_app(app: Flask, settings: Settings, redis_url: str) -> Services:
    """Build the services for ``app`` and register them under ``app.extensions``."""
    keyring = KeyRing(settings)
    hmac_keys = HmacKeys(settings)
    store = SessionStore(connect(settings, redis_url), settings)
    # What resource servers apply to these sessions (docs/RESOURCE_SERVERS.md): published by
    # the serving process at start (serving.py) and again with this worker's first session.
    store.publish_policy_with_first_session(hmac_keys.log_pseudonym, hmac_keys.dpop_nonce)
    tokens = TokenService(settings, keyring, hmac_keys)
    events = EventLog(hmac_keys.log_pseudonym)
    svc = Services(
        settings=settings,
        store=store,
        keyring=keyring,
        tokens=tokens,
        passwords=Passwords(settings),
        events=events,
        sessions=SessionService(settings, store, tokens, events),
        dpop=DPoPPolicy(settings, hmac_keys.dpop_nonce),
    )
    app.extensions[EXTENSION_KEY] = svc
    return svc


def services() -> Services:
    """Return the current app's services, or explain how to set them up."""
    try:
        svc: Services = current_app.extensions[EXTENSION_KEY]  # what init_app stored
    except KeyError:
        raise RuntimeError(
            "Latchkey services are not initialised: build the app with "
            "latchkey_server.create_app()"
        ) from None
    return svc
