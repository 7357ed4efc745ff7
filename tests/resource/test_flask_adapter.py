"""The Flask extension: a real Flask app protected with ``@lk.require_session`` answers a
live session's request, and refuses an ended one on the very next request in the shape
Latchkey's own ``/v1/me`` uses (problem+json, Latchkey's code, RFC 6750 challenge)."""

from __future__ import annotations

import pytest
from flask import Flask
from latchkey_resource.flask import LatchkeyResource, current_principal

from tests.resource.conftest import Deployment, app_headers, bearer_to


@pytest.fixture(scope="module")
def backend(deployment: Deployment) -> Flask:
    app = Flask("orders-api")
    app.config.update(LATCHKEY_ISSUER=deployment.issuer, LATCHKEY_REDIS_URL=deployment.redis.url)
    lk = LatchkeyResource(app)

    @app.get("/orders")
    @lk.require_session
    def orders() -> dict[str, str]:
        p = current_principal()
        return {"user_id": p.user_id, "username": p.username, "session_id": p.session_id}

    @app.get("/public")
    def public() -> dict[str, str]:
        return {"ok": "yes"}

    yield app
    app.extensions["latchkey_resource"].close()


def test_a_protected_view_serves_a_live_session_and_refuses_it_once_signed_out(
        deployment, backend):
    tokens = deployment.sign_in()
    client = backend.test_client()
    r = client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json == {"user_id": r.json["user_id"], "username": tokens["username"],
                      "session_id": tokens["session_id"]}
    out = bearer_to(deployment.server, "POST", "/v1/auth/logout-all", tokens["access_token"])
    assert out.status_code == 204
    r = client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401
    assert r.mimetype == "application/problem+json"
    assert r.json["code"] == "session_revoked" and r.json["reason"] == "logout"
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # The same answer Latchkey's own resource gives for that token.
    own = bearer_to(deployment.server, "GET", "/v1/me", tokens["access_token"])
    assert (own.status_code, own.json()["code"], own.json()["reason"]) == (
        401, r.json["code"], r.json["reason"])
    assert own.headers["WWW-Authenticate"] == r.headers["WWW-Authenticate"]


def test_a_request_without_a_token_gets_401_and_a_bare_challenge(backend):
    r = backend.test_client().get("/orders")
    assert r.status_code == 401 and r.json["code"] == "invalid_token"
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_unprotected_views_are_untouched(backend):
    assert backend.test_client().get("/public").json == {"ok": "yes"}


def test_init_app_without_an_issuer_says_what_to_set():
    with pytest.raises(RuntimeError, match="LATCHKEY_ISSUER"):
        LatchkeyResource(Flask("x"))
