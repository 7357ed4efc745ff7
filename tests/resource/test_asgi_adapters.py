"""The FastAPI dependency and the ASGI middleware, in a real FastAPI app and a real
Starlette app (driven through Starlette's TestClient, which runs the app on an event loop
as a server would): a live session is served, an ended one refused on the very next
request with Latchkey's code and the RFC 6750 challenge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from latchkey_resource import Principal, ResourceVerifier
from latchkey_resource.asgi import PRINCIPAL_STATE_KEY, LatchkeyMiddleware
from latchkey_resource.fastapi import LatchkeySession, install
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.resource.conftest import Deployment, app_headers, bearer_to


@pytest.fixture(scope="module")
def verifier(deployment: Deployment) -> ResourceVerifier:
    return deployment.verifier(service_name="orders-fastapi")


@pytest.fixture(scope="module")
def fastapi_client(verifier: ResourceVerifier) -> Iterator[TestClient]:
    app = FastAPI()
    install(app)
    session = LatchkeySession(verifier)

    @app.get("/orders")
    async def orders(principal: Principal = Depends(session)) -> dict[str, str]:  # noqa: B008
        return {"username": principal.username, "session_id": principal.session_id}

    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def starlette_client(verifier: ResourceVerifier) -> Iterator[TestClient]:
    async def orders(request: Request) -> JSONResponse:
        principal: Principal = getattr(request.state, PRINCIPAL_STATE_KEY)
        return JSONResponse({"username": principal.username})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/orders", orders), Route("/healthz", health)])
    with TestClient(LatchkeyMiddleware(app, verifier, exempt_paths={"/healthz"})) as client:
        yield client


def test_fastapi_dependency_serves_a_live_session_and_refuses_it_once_signed_out(
        deployment, fastapi_client):
    tokens = deployment.sign_in()
    r = fastapi_client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json() == {"username": tokens["username"], "session_id": tokens["session_id"]}
    api = deployment.api()
    try:
        other = api.login(tokens["username"], device_id="laptop-9")
    finally:
        api.close()
    out = bearer_to(deployment.server, "DELETE", f"/v1/auth/sessions/{tokens['session_id']}",
                    other["access_token"])
    assert out.status_code == 204
    r = fastapi_client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "session_revoked" and r.json()["reason"] == "remote"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_fastapi_dependency_refuses_a_request_without_a_token(fastapi_client):
    r = fastapi_client.get("/orders")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert r.headers["www-authenticate"] == "Bearer"


def test_starlette_middleware_serves_a_live_session_and_refuses_it_once_logged_out(
        deployment, starlette_client):
    tokens = deployment.sign_in()
    r = starlette_client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 200 and r.json() == {"username": tokens["username"]}
    out = bearer_to(deployment.server, "POST", "/v1/auth/logout-all", tokens["access_token"])
    assert out.status_code == 204
    r = starlette_client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401 and r.json()["code"] == "session_revoked"
    assert r.json()["reason"] == "logout"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_starlette_middleware_lets_exempt_paths_through(starlette_client):
    assert starlette_client.get("/healthz").json() == {"ok": True}
    assert starlette_client.get("/orders").status_code == 401


def test_the_dependency_works_in_a_plain_starlette_endpoint(deployment, verifier):
    session = LatchkeySession(verifier)

    async def orders(request: Request) -> JSONResponse:
        principal = await session(request)
        return JSONResponse({"username": principal.username})

    app = Starlette(routes=[Route("/orders", orders)])
    install(app)
    tokens = deployment.sign_in()
    with TestClient(app) as client:
        r = client.get("/orders", headers=app_headers(tokens["access_token"]))
        assert r.status_code == 200 and r.json() == {"username": tokens["username"]}
        assert bearer_to(deployment.server, "POST", "/v1/auth/logout-all",
                         tokens["access_token"]).status_code == 204
        r = client.get("/orders", headers=app_headers(tokens["access_token"]))
        assert r.status_code == 401 and r.json()["reason"] == "logout"
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
