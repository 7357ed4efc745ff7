"""Protect Flask views with Latchkey sessions: an extension and one decorator.

    app.config["LATCHKEY_ISSUER"] = "https://auth.example.com"
    app.config["LATCHKEY_REDIS_URL"] = "redis://lk-resource:...@redis:6379/0"
    lk = LatchkeyResource(app)          # or lk = LatchkeyResource(); lk.init_app(app)

    @app.get("/orders")
    @lk.require_session
    def orders():
        return {"user": current_principal().user_id}

A refused request is answered by the decorator itself, in problem+json with Latchkey's
code and the RFC 6750 challenge (``Refusal``), so the app needs no error handler. The
verifier lives in ``app.extensions["latchkey_resource"]``, one per app (per worker process
under gunicorn); optional config: ``LATCHKEY_AUDIENCE``, ``LATCHKEY_JWKS_URI``,
``LATCHKEY_REDIS_CLUSTER``, ``LATCHKEY_SERVICE_NAME``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, make_response, request

from .refusals import Refusal
from .verifier import Principal, ResourceVerifier

__all__ = ["EXTENSION_KEY", "LatchkeyResource", "current_principal", "refusal_response"]

EXTENSION_KEY = "latchkey_resource"
F = TypeVar("F", bound=Callable[..., Any])


def refusal_response(refusal: Refusal) -> Response:
    """Render a refusal as problem+json with its challenge."""
    return Response(json.dumps(refusal.problem()), status=refusal.status,
                    mimetype="application/problem+json", headers=refusal.headers())


class LatchkeyResource:
    """The Flask extension: builds a ``ResourceVerifier`` from ``app.config``."""

    def __init__(self, app: Flask | None = None, *,
                 verifier: ResourceVerifier | None = None) -> None:
        self._verifier = verifier
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the verifier on ``app`` (nothing connects until the first request)."""
        verifier = self._verifier
        if verifier is None:
            config = app.config
            try:
                issuer = config["LATCHKEY_ISSUER"]
            except KeyError:
                raise RuntimeError("set app.config['LATCHKEY_ISSUER'] to the Latchkey "
                                   "server's public base URL") from None
            verifier = ResourceVerifier(
                issuer, config.get("LATCHKEY_REDIS_URL"),
                redis_cluster=bool(config.get("LATCHKEY_REDIS_CLUSTER", False)),
                jwks_uri=config.get("LATCHKEY_JWKS_URI"),
                audience=config.get("LATCHKEY_AUDIENCE"),
                service_name=config.get("LATCHKEY_SERVICE_NAME", app.name))
        app.extensions[EXTENSION_KEY] = verifier

    @staticmethod
    def verifier() -> ResourceVerifier:
        """Return the current app's verifier, or explain how to set it up."""
        try:
            return cast(ResourceVerifier, current_app.extensions[EXTENSION_KEY])
        except KeyError:
            raise RuntimeError("LatchkeyResource is not initialised on this app: call "
                               "LatchkeyResource(app) or init_app(app)") from None

    def authenticate(self) -> Principal:
        """Verify the current request; return the principal or raise a ``Refusal``."""
        return self.verifier().verify(
            # The URL only if a DPoP proof must be checked against it: werkzeug rebuilds
            # it (IRI decoding) on every access.
            request.headers.get("Authorization"), method=request.method,
            url=lambda: request.url,
            headers=cast("Mapping[str, str]", request.headers),
            remote_addr=request.remote_addr or "")

    def require_session(self, view: F) -> F:
        """Decorate a view so it runs only for a live session (the principal on ``g``)."""

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                g.latchkey_principal = self.authenticate()
            except Refusal as refusal:
                return refusal_response(refusal)
            result = view(*args, **kwargs)
            nonce = self.verifier().current_nonce()
            if nonce is None:
                return result
            # Nonces on (the token server's policy): every answer carries the current one,
            # so the app rarely meets use_dpop_nonce (RFC 9449 section 9).
            response = make_response(result)
            response.headers.setdefault("DPoP-Nonce", nonce)
            return response

        return cast(F, wrapper)


def current_principal() -> Principal:
    """Return the principal ``require_session`` verified for this request."""
    try:
        return cast(Principal, g.latchkey_principal)
    except AttributeError:
        raise RuntimeError("current_principal() outside a view decorated with "
                           "require_session") from None
