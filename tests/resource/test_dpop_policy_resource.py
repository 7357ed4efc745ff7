"""P1 on a backend's own API, following the token server's DPoP policy (issue 17 follow-ups):
the iat window, jti limit, stolen-token policy and nonces come from the published policy
(``lk:{policy}``), never from the backend's own options; a request sent as DPoP is refused
with the DPoP challenge whatever the reason. Real server, real Redis, real verifier.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from latchkey_resource.asgi import PRINCIPAL_STATE_KEY, LatchkeyMiddleware
from latchkey_resource.policy import PolicyMissing, SessionPolicy, read_policy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.resource.conftest import Deployment, app_headers
from tests.resource.test_dpop_resource import (
    API,
    alerts,
    dpop_request,
    orders_app,
    refused,
    sign_in_bound,
)
from tests.server.dpop_support import DPoPKey

DPOP_CHALLENGE = 'DPoP error="invalid_token", algs="ES256 EdDSA"'


@pytest.fixture(scope="module")
def strict(deployment_factory: Callable[..., Deployment]) -> Deployment:
    """A token server with a short proof window, a small jti limit, stolen tokens ending
    their session, and nonces on (a day-long period: no test straddles a change)."""
    return deployment_factory(dpop_iat_window=5, dpop_jti_limit=10,
                              dpop_stolen_token="revoke", dpop_nonce="on",
                              dpop_nonce_period=86400)


def nonce_of(deployment: Deployment) -> str:
    """The nonce the token server hands out now (on any answer)."""
    r = httpx.get(deployment.server.base_url + "/v1/health", timeout=10)
    return r.headers["DPoP-Nonce"]


def bound_session(deployment: Deployment, key: DPoPKey) -> dict[str, str]:
    """Sign in with a proof by ``key`` carrying the token server's nonce."""
    nonce = nonce_of(deployment)
    original = key.proof
    key.proof = lambda *a, **kw: original(*a, **{"nonce": nonce, **kw})  # type: ignore
    try:
        return sign_in_bound(deployment, key)
    finally:
        key.proof = original  # type: ignore[method-assign]


# -- 2. one place for the DPoP settings ---------------------------------------------------
def test_the_token_server_publishes_its_dpop_policy(strict, deployment):
    policy = read_policy(strict.redis.client())
    assert (policy.dpop, policy.dpop_iat_window_seconds, policy.dpop_jti_limit,
            policy.dpop_theft_policy, policy.dpop_nonce_period_seconds) == (
        "allowed", 5, 10, "revoke", 86400)
    assert len(bytes.fromhex(policy.dpop_nonce_key)) == 32
    default = read_policy(deployment.redis.client())
    assert (default.dpop_iat_window_seconds, default.dpop_jti_limit,
            default.dpop_theft_policy, default.dpop_nonce_key) == (60, 2000, "report", "")


def test_a_backend_applies_the_published_iat_window(strict):
    key = DPoPKey()
    tokens = bound_session(strict, key)
    nonce = nonce_of(strict)
    # 20 s old: inside the backend's old default of 60 s, outside the token server's 5 s.
    headers = dpop_request(key, tokens["access_token"], nonce=nonce, iat=time.time() - 20)
    refusal = refused(strict.verifier(), headers)
    assert refusal.code == "invalid_dpop_proof" and "iat" in refusal.detail


def test_a_backend_applies_the_published_jti_limit(strict):
    key = DPoPKey()
    tokens = bound_session(strict, key)  # the login's proof is the first of ten
    nonce = nonce_of(strict)
    verifier = strict.verifier()
    for _ in range(9):
        headers = dpop_request(key, tokens["access_token"], nonce=nonce)
        verifier.verify(headers["Authorization"], method="GET", url=API + "/orders",
                        headers=headers)
    refusal = refused(verifier, dpop_request(key, tokens["access_token"], nonce=nonce))
    assert "Too many DPoP proofs" in refusal.detail


# -- 3. the DPoP challenge and the stolen-token policy -------------------------------------
def test_a_refusal_of_a_dpop_request_carries_the_dpop_challenge(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    verifier = deployment.verifier()
    # A forged signature, sent as DPoP: invalid_token with the DPoP challenge.
    forged = tokens["access_token"][:-4] + ("AAAA" if not tokens["access_token"].endswith(
        "AAAA") else "BBBB")
    refusal = refused(verifier, dpop_request(key, forged))
    assert refusal.code == "invalid_token"
    assert refusal.www_authenticate == DPOP_CHALLENGE
    # An ended session, sent as DPoP: session_revoked, the DPoP challenge too.
    with httpx.Client(base_url=deployment.server.base_url, timeout=10) as c:
        assert c.post("/v1/auth/logout", headers={
            "Authorization": f"DPoP {tokens['access_token']}"}).status_code == 204
    refusal = refused(verifier, dpop_request(key, tokens["access_token"]))
    assert refusal.code == "session_revoked"
    assert refusal.headers()["WWW-Authenticate"] == DPOP_CHALLENGE
    # Sent as Bearer, the Bearer challenge stays.
    refusal = refused(verifier, app_headers(forged))
    assert refusal.www_authenticate == 'Bearer error="invalid_token"'


def test_the_revoke_policy_ends_the_session_of_a_token_without_its_key(strict):
    key = DPoPKey()
    tokens = bound_session(strict, key)
    verifier = strict.verifier()
    refusal = refused(verifier, app_headers(tokens["access_token"]))  # copied, as Bearer
    assert refusal.code == "invalid_dpop_proof"
    alert = alerts(strict, "dpop_stolen_token")[-1]
    assert (alert["policy"], alert["revoked"], alert["missing"]) == ("revoke", "true", "bearer")
    # The key holder's next request finds the session ended, reason stolen.
    refusal = refused(verifier, dpop_request(key, tokens["access_token"],
                                             nonce=nonce_of(strict)))
    assert (refusal.code, refusal.reason) == ("session_revoked", "stolen")


# -- 4. nonces on resource servers ---------------------------------------------------------
def test_a_backend_demands_checks_and_hands_out_the_token_servers_nonce(strict):
    key = DPoPKey()
    tokens = bound_session(strict, key)
    verifier = strict.verifier()
    nonce = nonce_of(strict)
    for headers in (dpop_request(key, tokens["access_token"]),  # none
                    dpop_request(key, tokens["access_token"], nonce="bogus")):
        refusal = refused(verifier, headers)
        assert refusal.code == "use_dpop_nonce"
        assert refusal.headers()["DPoP-Nonce"] == nonce
        assert refusal.www_authenticate.startswith('DPoP error="use_dpop_nonce"')
    assert verifier.current_nonce() == nonce
    headers = dpop_request(key, tokens["access_token"], nonce=nonce)
    principal = verifier.verify(headers["Authorization"], method="GET", url=API + "/orders",
                                headers=headers)
    assert principal.session_id == tokens["session_id"]


def test_a_backend_ignores_nonces_while_the_token_server_has_them_off(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    verifier = deployment.verifier()
    assert verifier.current_nonce() is None
    headers = dpop_request(key, tokens["access_token"], nonce="anything")
    assert verifier.verify(headers["Authorization"], method="GET", url=API + "/orders",
                           headers=headers).session_id == tokens["session_id"]


def test_a_policy_from_before_dpop_decodes_with_the_token_servers_defaults(deployment):
    fields = read_policy(deployment.redis.client()).fields()
    older = {k: v for k, v in fields.items() if not k.startswith("dpop")}
    policy = SessionPolicy.from_fields(older)
    assert (policy.dpop, policy.dpop_iat_window_seconds, policy.dpop_jti_limit,
            policy.dpop_theft_policy, policy.dpop_nonce_key) == (
        "allowed", 60, 2000, "report", "")
    for bad in ({"dpop": "sometimes"}, {"dpop_stolen": "ignore"}, {"dpop_nonce_key": "zz"},
                {"dpop_iat_window": "0"}):
        with pytest.raises(PolicyMissing):
            SessionPolicy.from_fields({**fields, **bad})


def test_the_flask_adapter_hands_out_the_nonce_on_every_answer(strict):
    app = orders_app(strict)
    key = DPoPKey()
    tokens = bound_session(strict, key)
    nonce = nonce_of(strict)
    local = "http://localhost/orders"
    client = app.test_client()
    r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local))
    assert r.status_code == 401 and r.json["code"] == "use_dpop_nonce"
    assert r.headers["DPoP-Nonce"] == nonce
    r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local,
                                                   nonce=nonce))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["DPoP-Nonce"] == nonce
    app.extensions["latchkey_resource"].close()


def test_the_asgi_middleware_hands_out_the_nonce_on_every_answer(strict):
    async def orders(request: Request) -> JSONResponse:
        return JSONResponse({"session_id": request.scope["state"][PRINCIPAL_STATE_KEY]
                             .session_id})

    app = Starlette(routes=[Route("/orders", orders)])
    key = DPoPKey()
    tokens = bound_session(strict, key)
    nonce = nonce_of(strict)
    local = "http://testserver/orders"
    with TestClient(LatchkeyMiddleware(app, strict.verifier())) as client:
        r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local))
        assert r.status_code == 401 and r.json()["code"] == "use_dpop_nonce", r.text
        assert r.headers["DPoP-Nonce"] == nonce
        r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local,
                                                       nonce=nonce))
        assert r.status_code == 200, r.text
        assert r.headers["DPoP-Nonce"] == nonce


def test_the_fastapi_dependency_hands_out_the_nonce_on_every_answer(strict):
    from fastapi import Depends, FastAPI
    from latchkey_resource.fastapi import LatchkeySession, install
    from latchkey_resource.verifier import Principal

    app = FastAPI()
    install(app)
    session = LatchkeySession(strict.verifier())

    @app.get("/orders")
    async def orders(principal: Principal = Depends(session)) -> dict[str, str]:  # noqa: B008
        return {"session_id": principal.session_id}

    key = DPoPKey()
    tokens = bound_session(strict, key)
    nonce = nonce_of(strict)
    local = "http://testserver/orders"
    with TestClient(app) as client:
        r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local))
        assert r.status_code == 401 and r.json()["code"] == "use_dpop_nonce", r.text
        assert r.headers["DPoP-Nonce"] == nonce
        r = client.get("/orders", headers=app_headers("not-a-token"))
        assert r.status_code == 401 and r.headers["DPoP-Nonce"] == nonce
        r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local,
                                                       nonce=nonce))
        assert r.status_code == 200, r.text
        assert r.json() == {"session_id": tokens["session_id"]}
        assert r.headers["DPoP-Nonce"] == nonce


def test_the_wsgi_middleware_hands_out_the_nonce_on_every_answer(strict):
    from latchkey_resource.wsgi import PRINCIPAL_ENVIRON_KEY, LatchkeyWSGIMiddleware
    from werkzeug.test import Client

    def orders(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = json.dumps({"session_id": environ[PRINCIPAL_ENVIRON_KEY].session_id}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    key = DPoPKey()
    tokens = bound_session(strict, key)
    nonce = nonce_of(strict)
    local = "http://localhost/orders"
    client = Client(LatchkeyWSGIMiddleware(orders, strict.verifier()))
    r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local))
    assert r.status_code == 401 and r.json["code"] == "use_dpop_nonce", r.get_data(as_text=True)
    assert r.headers.getlist("DPoP-Nonce") == [nonce]
    r = client.get("/orders", headers=app_headers("not-a-token"))
    assert r.status_code == 401 and r.headers["DPoP-Nonce"] == nonce
    r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local,
                                                   nonce=nonce))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert json.loads(r.get_data()) == {"session_id": tokens["session_id"]}
    assert r.headers["DPoP-Nonce"] == nonce
