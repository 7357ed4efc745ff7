"""A backend team's FastAPI API protected by Latchkey sessions (the FastAPI example).

The same two endpoints as the Flask example:

    GET /healthz    200 {"status": "ok"}: no session needed
    GET /api/hello  200 for a live session; 401 RFC 6750 + problem+json with Latchkey's
                    code when the session was ended anywhere; 503 store_unavailable when
                    Redis cannot answer (fail closed)

Configured by the environment: ``LATCHKEY_ISSUER`` and ``LATCHKEY_REDIS_URL`` (optional
``LATCHKEY_AUDIENCE``, ``LATCHKEY_REDIS_CLUSTER``). Run it under uvicorn::

    uvicorn --factory main:create_app --host 127.0.0.1 --port 8002

The verifier is built in ``create_app`` (it connects lazily, on the first request) and
closed when the app shuts down; the check itself runs in a worker thread, so a slow store
never blocks the event loop.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route's annotations at
# run time, and ``Depends(session)`` names a local of create_app that a string cannot reach.
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from latchkey_resource import Principal, ResourceVerifier
from latchkey_resource.fastapi import LatchkeySession, install

__all__ = ["create_app"]


def _setting(overrides: Mapping[str, Any], name: str) -> str:
    value = overrides.get(name, os.environ.get(name, ""))
    return str(value)


def create_app(test_config: Mapping[str, Any] | None = None) -> FastAPI:
    """Build the API: settings from the environment, then ``test_config``."""
    config = test_config or {}
    issuer = _setting(config, "LATCHKEY_ISSUER")
    redis_url = _setting(config, "LATCHKEY_REDIS_URL")
    if not issuer or not redis_url:
        raise RuntimeError("set LATCHKEY_ISSUER (the Latchkey server's public base URL) and "
                           "LATCHKEY_REDIS_URL (the store it uses)")
    verifier = ResourceVerifier(
        issuer, redis_url, audience=_setting(config, "LATCHKEY_AUDIENCE") or None,
        redis_cluster=_setting(config, "LATCHKEY_REDIS_CLUSTER").lower() in {"1", "true", "yes"},
        service_name="fastapi-example")
    session = LatchkeySession(verifier)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        verifier.close()

    app = FastAPI(title="Latchkey FastAPI example", lifespan=lifespan)
    install(app)  # answers refusals in problem+json with the RFC 6750 challenge

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/hello")
    async def hello(p: Annotated[Principal, Depends(session)]) -> dict[str, str]:
        return {"message": f"Hello, {p.username}: your session is live.",
                "user_id": p.user_id, "session_id": p.session_id,
                "auth_level": p.auth_level, "served_by": "fastapi-example"}

    return app
