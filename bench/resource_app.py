"""The one endpoint the resource-server benchmark measures, under each protection (issue 15).

``GET /hello`` answers ``{"hello": "world"}`` in every mode; only what guards it differs:

- ``open``: nothing (the unprotected view: the floor the auth layer is measured over);
- ``latchkey``: ``latchkey_resource``'s Flask extension, ``@lk.require_session`` (JWT
  from the server's JWKS, then the session's one ``verify_touch`` round trip: idle,
  absolute, binding and revocation);
- ``fje``: Flask-JWT-Extended with its documented Redis blocklist, exactly as
  ``bench/peer_app.py`` configures it (the same app, with this view added to it), so
  that the peer of this benchmark is the peer of ``bench.compare_peer``.

The FastAPI app (``create_asgi_app``) has ``open`` and ``latchkey`` (the
``LatchkeySession`` dependency); Flask-JWT-Extended has no FastAPI form.

``RS_PACKAGE`` names the package that provides ``latchkey``'s guard (default
``latchkey_resource``): ``bench.resource_server --baseline REV`` imports a copy of an
earlier version under another name, to measure before and after in one run.

Settings come from the environment, so gunicorn and uvicorn run the same factory the
in-process benchmark calls: ``RS_MODE``, ``RS_ISSUER`` (the Latchkey server's URL) and
``RS_REDIS_URL`` (the shared store), and ``PEER_*`` for the ``fje`` mode (peer_app.py).
Run: ``RS_MODE=latchkey ... gunicorn 'bench.resource_app:create_app()'`` or
``uvicorn --factory bench.resource_app:create_asgi_app``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

__all__ = ["ASGI_MODES", "FLASK_MODES", "PATH", "create_app", "create_asgi_app",
           "create_floor_app"]

FLASK_MODES = ("open", "latchkey", "fje")
ASGI_MODES = ("open", "latchkey")
PATH = "/hello"




def create_app(mode: str | None = None) -> Flask:
    """Return the Flask app of ``mode`` (default: ``RS_MODE``) with ``GET /hello``."""
    mode = mode or os.environ["RS_MODE"]
    guard: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    if mode == "open":
        app = Flask(__name__)
    elif mode == "latchkey":
        LatchkeyResource = importlib.import_module(
            f"{os.environ.get('RS_PACKAGE', 'latchkey_resource')}.flask").LatchkeyResource

        app = Flask(__name__)
        # The extension's documented setup (docs/RESOURCE_SERVERS.md): two config keys.
        app.config["LATCHKEY_ISSUER"] = os.environ["RS_ISSUER"]
        app.config["LATCHKEY_REDIS_URL"] = os.environ["RS_REDIS_URL"]
        guard = LatchkeyResource(app).require_session
    elif mode == "fje":
        from flask_jwt_extended import jwt_required

        from bench.peer_app import create_app as create_peer_app

        app = create_peer_app()
        guard = jwt_required()
    else:
        raise ValueError(f"RS_MODE must be one of {', '.join(FLASK_MODES)}")

    def hello() -> Any:
        return jsonify(hello="world")

    app.add_url_rule(PATH, "hello", guard(hello) if guard else hello)
    return app


def create_floor_app(redis_url: str) -> Flask:
    """The unprotected view plus one Redis round trip (a ``GET``) and no auth at all.

    The floor under any auth layer that asks a store on every request: what the view
    costs once the worker blocks on Redis once, so the auth layers can be read over it.
    """
    import redis

    app = Flask(__name__)
    client = redis.Redis.from_url(redis_url)

    @app.get(PATH)
    def hello() -> Any:
        client.get("lk-bench:floor")
        return jsonify(hello="world")

    return app


def create_asgi_app(mode: str | None = None) -> Any:
    """Return the FastAPI app of ``mode`` (default: ``RS_MODE``) with ``GET /hello``."""
    from fastapi import Depends, FastAPI

    mode = mode or os.environ["RS_MODE"]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    if mode == "open":
        @app.get(PATH)
        async def hello() -> dict[str, str]:
            return {"hello": "world"}
    elif mode == "latchkey":
        package = os.environ.get("RS_PACKAGE", "latchkey_resource")
        ResourceVerifier = importlib.import_module(package).ResourceVerifier
        fastapi_adapter = importlib.import_module(f"{package}.fastapi")
        LatchkeySession, install = (
            fastapi_adapter.LatchkeySession, fastapi_adapter.install)

        install(app)  # refusals answered in problem+json with the RFC 6750 challenge
        session = Depends(LatchkeySession(ResourceVerifier(os.environ["RS_ISSUER"],
                                                           os.environ["RS_REDIS_URL"])))

        # ``Any``, not ``Principal``: FastAPI resolves the annotation in this module's
        # globals (the import is local); the dependency is what matters.
        @app.get(PATH)
        async def hello_protected(principal: Any = session) -> dict[str, str]:
            return {"hello": "world"}
    else:
        raise ValueError(f"RS_MODE must be one of {', '.join(ASGI_MODES)}")
    return app
