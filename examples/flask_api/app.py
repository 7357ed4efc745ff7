"""A backend team's Flask API protected by Latchkey sessions (the Flask example).

One protected endpoint and one open one:

    GET /healthz    200 {"status": "ok"}: no session needed (a load balancer's probe)
    GET /api/hello  200 for a live session: who is calling, from the session in the store;
                    401 RFC 6750 + problem+json with Latchkey's own code when the session
                    was ended anywhere (token_expired, invalid_token, session_revoked,
                    session_expired), 503 store_unavailable when Redis cannot answer

Configured by the environment, as a deployed service is: ``LATCHKEY_ISSUER`` (the Latchkey
server's public base URL; the JWKS is fetched from it) and ``LATCHKEY_REDIS_URL`` (the
store the Latchkey server uses; the resource server needs read access to the session keys
and the one script it runs, docs/RESOURCE_SERVERS.md has the ACL). Run it under gunicorn::

    gunicorn --bind 127.0.0.1:8001 --workers 2 'app:create_app()'

Nothing connects at import or in ``create_app``: the verifier connects on the first
request, in the worker that serves it (safe with gunicorn's forking workers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from latchkey_resource.flask import LatchkeyResource, current_principal

__all__ = ["create_app"]

#: The environment variables this service reads (the names the Latchkey server uses too).
ENV_SETTINGS = ("LATCHKEY_ISSUER", "LATCHKEY_REDIS_URL", "LATCHKEY_AUDIENCE",
                "LATCHKEY_REDIS_CLUSTER")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: settings from the environment, then ``test_config``."""
    app = Flask(__name__)
    app.config.update({name: os.environ[name] for name in ENV_SETTINGS if name in os.environ})
    app.config["LATCHKEY_SERVICE_NAME"] = "flask-example"
    app.config.update(test_config or {})
    if not app.config.get("LATCHKEY_ISSUER") or not app.config.get("LATCHKEY_REDIS_URL"):
        raise RuntimeError("set LATCHKEY_ISSUER (the Latchkey server's public base URL) and "
                           "LATCHKEY_REDIS_URL (the store it uses)")
    app.config["LATCHKEY_REDIS_CLUSTER"] = str(
        app.config.get("LATCHKEY_REDIS_CLUSTER", "")).lower() in {"1", "true", "yes"}
    lk = LatchkeyResource(app)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    @app.get("/api/hello")
    @lk.require_session
    def hello() -> ResponseReturnValue:
        p = current_principal()
        return jsonify(message=f"Hello, {p.username}: your session is live.",
                       user_id=p.user_id, session_id=p.session_id, auth_level=p.auth_level,
                       served_by="flask-example")

    return app
