"""Latchkey's OAuth 2.0 face: standard clients refresh, revoke and introspect (R2, R3).

One module per RFC, each the protocol's steps in the RFC's order with its section numbers
(``rfc6749`` the refresh grant, ``rfc7009`` revocation, ``rfc7662`` introspection,
``rfc8414`` metadata), behind thin Flask glue (``views``); ``clients`` is the client
registry and client authentication, ``forms`` the one strict form parser, ``errors`` the
section 5.2 errors (Authlib's classes). Every decision about a session stays in the
session service (``sessions.py``): the ``/v1`` views and these endpoints are two faces
over the same methods, so a session refreshed on either is the same session under the
same rules (grace, reuse, binding, timeouts, throttles, events).
"""

from __future__ import annotations

from flask import Flask

from ..extension import Services
from ..keys import HmacKeys
from .clients import ClientRegistry
from .rfc8414 import metadata, validate_metadata
from .views import EXTENSION_KEY, bp, registry

__all__ = ["ClientRegistry", "build_registry", "init_app", "registry"]


def build_registry(svc: Services) -> ClientRegistry:
    """Return the client registry over the app's store (the admin CLI builds one too)."""
    return ClientRegistry(svc.settings, svc.store, HmacKeys(svc.settings).client_secret_hash)


def init_app(app: Flask, svc: Services) -> None:
    """Register the OAuth endpoints and their registry; check the metadata document."""
    validate_metadata(metadata(svc.settings))  # at start-up, not on the first request
    app.extensions[EXTENSION_KEY] = build_registry(svc)
    app.register_blueprint(bp)
