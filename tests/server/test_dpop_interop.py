"""P1 interop: DPoP proofs built by joserfc, an independent JOSE library, are accepted by a
real server end to end (login binds, refresh and a protected request prove the key), and
joserfc's own RFC 7638 thumbprint is the ``cnf.jkt`` the server binds.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey
from latchkey_resource.dpop import access_token_hash

from tests.conftest import PASSWORD, ServerProcess
from tests.server.dpop_support import register
from tests.server.oauth_support import jwt_parts


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return module_server_factory()


def joserfc_proof(key: Any, alg: str, method: str, url: str,
                  access_token: str | None = None) -> str:
    """Build a proof with joserfc alone: its key, its JWK export, its signer."""
    claims: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method, "htu": url,
                              "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    header = {"alg": alg, "typ": "dpop+jwt", "jwk": key.as_dict(private=False)}
    with warnings.catch_warnings():
        # joserfc 1.x flags EdDSA as superseded by RFC 9864's Ed25519; API.md names EdDSA.
        warnings.simplefilter("ignore")
        return jose_jwt.encode(header, claims, key, algorithms=[alg])


@pytest.mark.parametrize(("alg", "make_key"), [
    ("ES256", lambda: ECKey.generate_key("P-256")),
    ("EdDSA", lambda: OKPKey.generate_key("Ed25519")),
])
def test_joserfc_proofs_bind_refresh_and_reach_a_resource(server, alg, make_key):
    key = make_key()
    base = server.base_url
    with server.client() as c:
        username = register(c)
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                   headers={"DPoP": joserfc_proof(key, alg, "POST", base + "/v1/auth/login")})
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["token_type"] == "DPoP"
        assert jwt_parts(tokens["access_token"])[1]["cnf"] == {"jkt": key.thumbprint()}

        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                   headers={"DPoP": joserfc_proof(key, alg, "POST", base + "/v1/auth/refresh")})
        assert r.status_code == 200, r.text
        tokens = r.json()

        access = tokens["access_token"]
        r = c.get("/v1/me", headers={"Authorization": f"DPoP {access}",
                                     "DPoP": joserfc_proof(key, alg, "GET", base + "/v1/me",
                                                           access)})
        assert r.status_code == 200, r.text
        assert r.json()["username"] == username
