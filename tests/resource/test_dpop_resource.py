"""P1 on a backend's own API: the resource-server package checks DPoP proofs with the token
server's own code (``latchkey_resource.dpop``). A DPoP-bound token needs ``Authorization:
DPoP`` and a proof by its key with ``ath``; sent as Bearer, without a proof or with another
key's, it is refused and raised as stolen; a proof is accepted once, on the backend and on
the token server alike, since both use up its jti in the same set.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask
from latchkey_resource import Refusal
from latchkey_resource.flask import LatchkeyResource, current_principal
from latchkey_resource.store_keys import SECURITY_STREAM_KEY

from tests.conftest import PASSWORD, unique_username
from tests.resource.conftest import APP_UA, DEVICE, Deployment, app_headers
from tests.server.dpop_support import DPoPKey

API = "https://orders.example.com"


def sign_in_bound(deployment: Deployment, key: DPoPKey) -> dict[str, Any]:
    base = deployment.server.base_url
    username = unique_username("rs-dpop")
    with httpx.Client(base_url=base, timeout=15, headers={"User-Agent": APP_UA}) as c:
        assert c.post("/v1/auth/register",
                      json={"username": username, "password": PASSWORD}).status_code == 201
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD,
                                           "device_id": DEVICE},
                   headers={"DPoP": key.proof("POST", base + "/v1/auth/login")})
        assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
        return r.json()


def orders_app(deployment: Deployment) -> Flask:
    """A Flask API whose ``/orders`` needs a live session and answers with its id."""
    app = Flask("orders-api")
    app.config.update(LATCHKEY_ISSUER=deployment.issuer, LATCHKEY_REDIS_URL=deployment.redis.url)
    lk = LatchkeyResource(app)

    @app.get("/orders")
    @lk.require_session
    def orders() -> dict[str, str]:
        return {"session_id": current_principal().session_id}

    return app


def dpop_request(key: DPoPKey, access: str, url: str = API + "/orders",
                 **proof_args: Any) -> dict[str, str]:
    return {"User-Agent": APP_UA, "X-Device-Id": DEVICE, "Authorization": f"DPoP {access}",
            "DPoP": key.proof("GET", url, access_token=access, **proof_args)}


def alerts(deployment: Deployment, name: str) -> list[dict[str, str]]:
    entries = deployment.redis.client().xrange(SECURITY_STREAM_KEY)
    return [fields for _, fields in entries if fields.get("event") == name]


def refused(verifier: Any, headers: dict[str, str], url: str = API + "/orders") -> Refusal:
    with pytest.raises(Refusal) as caught:
        verifier.verify(headers.get("Authorization"), method="GET", url=url, headers=headers)
    return caught.value


def test_a_bound_token_with_a_proof_by_its_key_is_served(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    verifier = deployment.verifier()
    headers = dpop_request(key, tokens["access_token"])
    principal = verifier.verify(headers["Authorization"], method="GET", url=API + "/orders",
                                headers=headers)
    assert principal.session_id == tokens["session_id"]


def test_a_bound_token_without_its_key_is_refused_and_raised_as_stolen(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    access = tokens["access_token"]
    verifier = deployment.verifier()
    before = len(alerts(deployment, "dpop_stolen_token"))
    for headers in (app_headers(access),  # as Bearer
                    {**app_headers(), "Authorization": f"DPoP {access}"},  # no proof
                    dpop_request(DPoPKey(), access)):  # another key's proof
        refusal = refused(verifier, headers)
        assert (refusal.status, refusal.code) == (401, "invalid_dpop_proof")
        assert refusal.www_authenticate.startswith('DPoP error="invalid_dpop_proof"')
        assert 'algs="ES256 EdDSA"' in refusal.www_authenticate
    raised = alerts(deployment, "dpop_stolen_token")[before:]
    assert [a["missing"] for a in raised] == ["bearer", "no_proof", "other_key"]


@pytest.mark.parametrize("bend", ["htu", "htm", "ath", "stale iat"])
def test_a_bad_proof_is_refused(deployment, bend):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    access = tokens["access_token"]
    headers = dpop_request(key, access)
    if bend == "htu":
        headers["DPoP"] = key.proof("GET", API + "/invoices", access_token=access)
    elif bend == "htm":
        headers["DPoP"] = key.proof("DELETE", API + "/orders", access_token=access)
    elif bend == "ath":
        headers["DPoP"] = key.proof("GET", API + "/orders", access_token=access + "x")
    else:
        import time
        headers["DPoP"] = key.proof("GET", API + "/orders", access_token=access,
                                    iat=time.time() - 600)
    assert refused(deployment.verifier(), headers).code == "invalid_dpop_proof"


def test_a_proof_is_accepted_once_on_the_backend(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    verifier = deployment.verifier()
    headers = dpop_request(key, tokens["access_token"])
    verifier.verify(headers["Authorization"], method="GET", url=API + "/orders",
                    headers=headers)
    assert refused(verifier, headers).code == "invalid_dpop_proof"
    assert alerts(deployment, "dpop_proof_replayed")


def test_behind_a_proxy_htu_is_the_public_url(deployment):
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    verifier = deployment.verifier(public_base_url=API)
    headers = dpop_request(key, tokens["access_token"])
    # The adapter sees the internal URL; the proof names the public one.
    assert verifier.verify(headers["Authorization"], method="GET",
                           url="http://10.0.0.7:8080/orders?page=2", headers=headers)


def test_the_flask_adapter_answers_a_dpop_challenge(deployment):
    app = orders_app(deployment)
    key = DPoPKey()
    tokens = sign_in_bound(deployment, key)
    client = app.test_client()
    local = "http://localhost/orders"
    r = client.get("/orders", headers=dpop_request(key, tokens["access_token"], url=local))
    assert r.status_code == 200, r.get_data(as_text=True)
    r = client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401 and r.json["code"] == "invalid_dpop_proof"
    assert r.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    app.extensions["latchkey_resource"].close()
