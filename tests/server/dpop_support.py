"""A device's DPoP key and the proofs it signs (RFC 9449 section 4), for the DPoP tests.

Proofs are built with PyJWT here, as an SDK would; tests/server/test_dpop_interop.py builds
them with joserfc instead, an independent JOSE library, to show the server accepts what
another implementation makes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from latchkey_resource.dpop import access_token_hash, jwk_thumbprint

from tests.conftest import PASSWORD, ServerProcess, unique_username

__all__ = ["DPoPKey", "assert_refused", "dpop_headers", "register", "sign_in_with_key",
           "signed_in_key", "signed_in_with_nonce"]


class DPoPKey:
    """One device key pair: ES256 (P-256) or EdDSA (Ed25519)."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))

    @property
    def jkt(self) -> str:
        return jwk_thumbprint(self.jwk)

    def proof(self, method: str, url: str, *, access_token: str | None = None,
              nonce: str | None = None, iat: float | None = None, jti: str | None = None,
              header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None,
              ) -> str:
        """Sign a proof for ``method url``; the keyword arguments bend it for the tests."""
        body: dict[str, Any] = {"jti": jti or uuid.uuid4().hex, "htm": method, "htu": url,
                                "iat": int(time.time() if iat is None else iat)}
        if access_token is not None:
            body["ath"] = access_token_hash(access_token)
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims or {})
        head = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=head)


def dpop_headers(key: DPoPKey, server: ServerProcess, method: str, path: str,
                 access_token: str | None = None, **proof_args: Any) -> dict[str, str]:
    """Return the headers of a request with a proof (and ``Authorization: DPoP``)."""
    headers = {"DPoP": key.proof(method, server.base_url + path, access_token=access_token,
                                 **proof_args)}
    if access_token is not None:
        headers["Authorization"] = f"DPoP {access_token}"
    return headers


def register(http: httpx.Client) -> str:
    """Register a fresh user; return the username."""
    username = unique_username("dpop")
    r = http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return username


def sign_in_with_key(server: ServerProcess, key: DPoPKey,
                     http: httpx.Client | None = None) -> dict[str, Any]:
    """Register and sign in with a proof by ``key``; return the token response."""
    with (http or server.client()) as c:
        username = register(c)
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                   headers=dpop_headers(key, server, "POST", "/v1/auth/login"))
        assert r.status_code == 200, r.text
        return r.json()


def signed_in_key(server: ServerProcess, alg: str = "ES256") -> tuple[DPoPKey, dict[str, Any]]:
    """Make a device key and sign in with a proof by it: the key and its bound session."""
    key = DPoPKey(alg)
    return key, sign_in_with_key(server, key)


def assert_refused(r: httpx.Response, status: int, code: str = "invalid_dpop_proof") -> None:
    """Assert a DPoP refusal: its status and code, and on a 401 the DPoP challenge."""
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text
    if status == 401:
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith(f'DPoP error="{code}"'), challenge
        assert 'algs="ES256 EdDSA"' in challenge


def signed_in_with_nonce(server: ServerProcess, key: DPoPKey) -> tuple[dict[str, Any], str]:
    """Sign in on a server demanding nonces: refused with one, then in with it.

    Returns the token response and the nonce the refusal handed out.
    """
    with server.client() as c:
        username = register(c)
        body = {"username": username, "password": PASSWORD}
        r = c.post("/v1/auth/login", json=body,
                   headers=dpop_headers(key, server, "POST", "/v1/auth/login"))
        assert_refused(r, 400, "use_dpop_nonce")
        nonce = r.headers["DPoP-Nonce"]
        r = c.post("/v1/auth/login", json=body,
                   headers=dpop_headers(key, server, "POST", "/v1/auth/login", nonce=nonce))
    assert r.status_code == 200, r.text
    return dict(r.json()), nonce
