"""P1: DPoP (RFC 9449) binds a session to the device's key, end to end on a real server and
a real redis-server: a stolen refresh or access token without the key is refused and raised
as a security event; proofs are single use, time-boxed, method- and URL-bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from latchkey_resource.dpop import access_token_hash

from tests.conftest import PASSWORD, ServerProcess
from tests.server.dpop_support import (
    DPoPKey,
    assert_refused,
    dpop_headers,
    register,
    sign_in_with_key,
    signed_in_key,
    signed_in_with_nonce,
)
from tests.server.oauth_support import DEFAULT_CLIENT_ID, FORM, basic, create_client, jwt_parts
from tests.server.ops_support import client_commands_during


def events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    """Return the events ``name`` the server logged so far."""
    out = []
    for line in server.logs().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            doc = json.loads(line)
            if doc.get("event") == name:
                out.append(doc)
    return out


def me(server: ServerProcess, key: DPoPKey, tokens: dict[str, Any],
       **proof_args: Any) -> httpx.Response:
    with server.client() as c:
        return c.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                    tokens["access_token"], **proof_args))


def refresh(server: ServerProcess, key: DPoPKey | None, tokens: dict[str, Any],
            **proof_args: Any) -> httpx.Response:
    headers = dpop_headers(key, server, "POST", "/v1/auth/refresh", **proof_args) if key else {}
    with server.client() as c:
        return c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                      headers=headers)


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """The default policy (DPOP=allowed, stolen tokens reported, the session kept)."""
    return module_server_factory()


# -- binding ------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_login_with_a_proof_binds_the_session_to_the_key(server, alg):
    key = DPoPKey(alg)
    tokens = sign_in_with_key(server, key)
    assert tokens["token_type"] == "DPoP"
    _, claims = jwt_parts(tokens["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}
    r = me(server, key, tokens)
    assert r.status_code == 200, r.text


def test_a_login_without_a_proof_stays_a_bearer_session_under_allowed(server):
    with server.client() as c:
        username = register(c)
        tokens = c.post("/v1/auth/login",
                        json={"username": username, "password": PASSWORD}).json()
        assert tokens["token_type"] == "Bearer"
        assert "cnf" not in jwt_parts(tokens["access_token"])[1]
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert r.status_code == 200


def test_refresh_with_the_same_key_rotates_and_keeps_the_binding(server):
    key, tokens = signed_in_key(server)
    for _ in range(3):
        r = refresh(server, key, tokens)
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["token_type"] == "DPoP"
        assert jwt_parts(tokens["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    assert me(server, key, tokens).status_code == 200


def test_a_refresh_token_copied_without_the_key_is_refused_and_raised_as_stolen(server):
    key, tokens = signed_in_key(server)
    before = len(events(server, "dpop_stolen_token"))
    assert_refused(refresh(server, None, tokens), 400)
    assert_refused(refresh(server, DPoPKey(), tokens), 400)  # the thief's own key
    raised = events(server, "dpop_stolen_token")[before:]
    assert [(e["kind"], e["missing"], e["revoked"]) for e in raised] == [
        ("refresh", "no_proof", False), ("refresh", "other_key", False)]
    # Nothing rotated, and by default the key holder's session lives on (API.md).
    r = refresh(server, key, tokens)
    assert r.status_code == 200, r.text


def test_a_bound_access_token_sent_as_bearer_is_refused_and_reported(server):
    key, tokens = signed_in_key(server)
    before = len(events(server, "dpop_stolen_token"))
    with server.client() as c:
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert_refused(r, 401)
        # The DPoP scheme without any proof, and with a proof by another key.
        r = c.get("/v1/me", headers={"Authorization": f"DPoP {tokens['access_token']}"})
        assert_refused(r, 401)
    assert_refused(me(server, DPoPKey(), tokens), 401)
    raised = events(server, "dpop_stolen_token")[before:]
    assert [(e["kind"], e["missing"]) for e in raised] == [
        ("access", "bearer"), ("access", "no_proof"), ("access", "other_key")]
    assert me(server, key, tokens).status_code == 200


def test_an_unbound_token_sent_with_the_dpop_scheme_is_refused(server):
    with server.client() as c:
        username = register(c)
        tokens = c.post("/v1/auth/login",
                        json={"username": username, "password": PASSWORD}).json()
    assert_refused(me(server, DPoPKey(), tokens), 401)


# -- single use -----------------------------------------------------------------------
def test_a_replayed_proof_is_refused_on_refresh_and_on_a_resource(server):
    key, tokens = signed_in_key(server)
    before = len(events(server, "dpop_proof_replayed"))
    proof = key.proof("POST", server.base_url + "/v1/auth/refresh")
    with server.client() as c:
        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                   headers={"DPoP": proof})
        assert r.status_code == 200, r.text
        tokens = r.json()
        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                   headers={"DPoP": proof})
        assert_refused(r, 400)
        headers = dpop_headers(key, server, "GET", "/v1/me", tokens["access_token"])
        assert c.get("/v1/me", headers=headers).status_code == 200
        assert_refused(c.get("/v1/me", headers=headers), 401)
    assert [e["kind"] for e in events(server, "dpop_proof_replayed")[before:]] == [
        "refresh", "access"]
    # A fresh proof by the key still works: the replay changed nothing.
    assert refresh(server, key, tokens).status_code == 200


def test_a_replayed_login_proof_is_refused(server):
    key = DPoPKey()
    with server.client() as c:
        username = register(c)
        headers = dpop_headers(key, server, "POST", "/v1/auth/login")
        body = {"username": username, "password": PASSWORD}
        assert c.post("/v1/auth/login", json=body, headers=headers).status_code == 200
        assert_refused(c.post("/v1/auth/login", json=body, headers=headers), 400)


# -- each check of RFC 9449 section 4.3 -----------------------------------------------------
BAD_PROOFS: dict[str, Callable[[DPoPKey, ServerProcess, str], str]] = {
    "wrong htu": lambda k, s, t: k.proof("GET", s.base_url + "/v1/other", access_token=t),
    "wrong host in htu": lambda k, s, t: k.proof("GET", "http://evil.example/v1/me",
                                                 access_token=t),
    "wrong htm": lambda k, s, t: k.proof("POST", s.base_url + "/v1/me", access_token=t),
    "wrong ath": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me", access_token=t + "x"),
    "no ath": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me"),
    "stale iat": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me", access_token=t,
                                         iat=time.time() - 120),
    "future iat": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me", access_token=t,
                                          iat=time.time() + 120),
    "typ JWT": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me", access_token=t,
                                       header={"typ": "JWT"}),
    "private key in jwk": lambda k, s, t: k.proof(
        "GET", s.base_url + "/v1/me", access_token=t,
        header={"jwk": {**k.jwk, "d": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
    "alg none": lambda k, s, t: jwt.encode(
        {"jti": "j-none", "htm": "GET", "htu": s.base_url + "/v1/me", "iat": int(time.time()),
         "ath": access_token_hash(t)}, None, algorithm="none",
        headers={"typ": "dpop+jwt", "jwk": k.jwk}),
    "alg HS256": lambda k, s, t: jwt.encode(
        {"jti": "j-hs", "htm": "GET", "htu": s.base_url + "/v1/me", "iat": int(time.time()),
         "ath": access_token_hash(t)}, "a-shared-secret-of-thirty-two-bytes!",
        algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": k.jwk}),
    "signed by another key": lambda k, s, t: DPoPKey().proof(
        "GET", s.base_url + "/v1/me", access_token=t, header={"jwk": k.jwk}),
    "no jti": lambda k, s, t: k.proof("GET", s.base_url + "/v1/me", access_token=t,
                                      claims={"jti": None}),
    "garbage": lambda k, s, t: "not.a.jwt",
}


@pytest.mark.parametrize("name", BAD_PROOFS)
def test_a_bad_proof_on_a_resource_is_refused_with_a_dpop_challenge(server, name):
    key, tokens = signed_in_key(server)
    proof = BAD_PROOFS[name](key, server, tokens["access_token"])
    with server.client() as c:
        r = c.get("/v1/me", headers={"Authorization": f"DPoP {tokens['access_token']}",
                                     "DPoP": proof})
    assert_refused(r, 401)
    assert me(server, key, tokens).status_code == 200


def test_a_stale_or_misdirected_proof_on_a_token_request_is_refused(server):
    key, tokens = signed_in_key(server)
    assert_refused(refresh(server, key, tokens, iat=time.time() - 3600), 400)
    with server.client() as c:
        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                   headers={"DPoP": key.proof("POST", server.base_url + "/v1/auth/login")})
        assert_refused(r, 400)
        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                   headers=[("DPoP", key.proof("POST", server.base_url + "/v1/auth/refresh")),
                            ("DPoP", key.proof("POST", server.base_url + "/v1/auth/refresh"))])
        assert_refused(r, 400)
    assert refresh(server, key, tokens).status_code == 200


def test_htu_is_compared_normalised_without_query_or_fragment(server):
    key, tokens = signed_in_key(server)
    url = server.base_url.replace("http://", "HTTP://").replace("127.0.0.1", "127.0.0.1")
    r = me(server, key, tokens)  # warm
    assert r.status_code == 200
    with server.client() as c:
        proof = key.proof("GET", url + "/v1/me?x=1#frag", access_token=tokens["access_token"])
        r = c.get("/v1/me", headers={"Authorization": f"DPoP {tokens['access_token']}",
                                     "DPoP": proof})
    assert r.status_code == 200, r.text


# -- the account views that replace a session ------------------------------------------
def test_reauth_and_password_change_carry_the_binding_to_the_new_session(server):
    key, tokens = signed_in_key(server)
    with server.client() as c:
        r = c.post("/v1/auth/reauth", json={"password": PASSWORD},
                   headers=dpop_headers(key, server, "POST", "/v1/auth/reauth",
                                        tokens["access_token"]))
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["token_type"] == "DPoP"
        assert jwt_parts(tokens["access_token"])[1]["cnf"] == {"jkt": key.jkt}
        r = c.post("/v1/auth/password",
                   json={"current_password": PASSWORD,
                         "new_password": "another long passphrase 91"},
                   headers=dpop_headers(key, server, "POST", "/v1/auth/password",
                                        tokens["access_token"]))
        assert r.status_code == 200, r.text
        tokens = r.json()
    assert jwt_parts(tokens["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    assert_refused(refresh(server, None, tokens), 400)
    assert refresh(server, key, tokens).status_code == 200


def test_logout_needs_no_proof(server):
    key, tokens = signed_in_key(server)
    with server.client() as c:
        r = c.post("/v1/auth/logout",
                   headers={"Authorization": f"DPoP {tokens['access_token']}"})
        assert r.status_code == 204, r.text
    r = me(server, key, tokens)
    assert r.status_code == 401 and r.json()["code"] == "session_revoked"


# -- the OAuth face ----------------------------------------------------------------------
def test_the_oauth_token_endpoint_needs_the_key_and_answers_in_rfc_shape(server):
    # Authlib's clients do not send DPoP (authlib 1.9: "Authlib supports neither DPoP nor
    # mTLS"), so the standard form request is made with plain httpx.
    key, tokens = signed_in_key(server)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": DEFAULT_CLIENT_ID}
    with server.client() as c:
        r = c.post("/oauth/token", data=form, headers=FORM)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_dpop_proof"
        r = c.post("/oauth/token", data=form,
                   headers={**FORM, **dpop_headers(key, server, "POST", "/oauth/token")})
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "DPoP"


def test_metadata_lists_the_proof_algorithms(server):
    with server.client() as c:
        doc = c.get("/.well-known/oauth-authorization-server").json()
    assert doc["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]


def test_introspection_returns_cnf_for_bound_tokens(server):
    resource = create_client(server, "resource", "dpop-introspect")
    key, tokens = signed_in_key(server)
    auth = basic(resource["client_id"], resource["client_secret"])
    with server.client() as c:
        for token in (tokens["access_token"], tokens["refresh_token"]):
            r = c.post("/oauth/introspect", data={"token": token}, headers={**FORM, **auth})
            assert r.status_code == 200, r.text
            assert r.json()["active"] is True
            assert r.json()["cnf"] == {"jkt": key.jkt}


# -- one round trip ------------------------------------------------------------------------
def test_a_dpop_request_and_a_dpop_refresh_cost_one_round_trip_each(server, redis_server):
    key, tokens = signed_in_key(server)
    watcher = redis_server.client()
    with server.client() as c:
        def call_me() -> None:
            c.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                 tokens["access_token"])).raise_for_status()

        seen = [client_commands_during(watcher, call_me) for _ in range(3)]
        assert sorted(len(s) for s in seen)[1] == 1, seen
        chain = [tokens]

        def refresh_once() -> None:
            r = c.post("/v1/auth/refresh", json={"refresh_token": chain[-1]["refresh_token"]},
                       headers=dpop_headers(key, server, "POST", "/v1/auth/refresh"))
            r.raise_for_status()
            chain.append(r.json())

        seen = [client_commands_during(watcher, refresh_once) for _ in range(3)]
        assert sorted(len(s) for s in seen)[1] == 1, seen


# -- policies ------------------------------------------------------------------------------
def test_the_revoke_policy_ends_a_session_whose_token_came_without_its_key(server_factory):
    server = server_factory(dpop_stolen_token="revoke")
    key, tokens = signed_in_key(server)
    assert_refused(refresh(server, None, tokens), 400)
    assert events(server, "dpop_stolen_token")[-1]["revoked"] is True
    r = refresh(server, key, tokens)
    assert r.status_code == 401 and r.json()["code"] == "session_revoked", r.text
    assert r.json()["reason"] == "stolen"
    # And for an access token sent as Bearer.
    tokens = sign_in_with_key(server, key)
    with server.client() as c:
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert_refused(r, 401)
    r = me(server, key, tokens)
    assert r.status_code == 401 and r.json()["reason"] == "stolen", r.text


def test_required_refuses_a_token_request_without_a_proof(server_factory):
    server = server_factory(dpop="required")
    with server.client() as c:
        username = register(c)
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert_refused(r, 400)
    key, tokens = signed_in_key(server)
    assert refresh(server, key, tokens).status_code == 200


def test_off_ignores_proofs_and_issues_bearer_tokens(server_factory):
    server = server_factory(dpop="off")
    _, tokens = signed_in_key(server)
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in jwt_parts(tokens["access_token"])[1]
    with server.client() as c:
        doc = c.get("/.well-known/oauth-authorization-server").json()
        assert "dpop_signing_alg_values_supported" not in doc
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert r.status_code == 200
    assert refresh(server, None, tokens).status_code == 200


def test_nonces_are_demanded_handed_out_and_then_accepted(server_factory):
    # A day-long period: the test never straddles a change of nonce.
    server = server_factory(dpop_nonce="on", dpop_nonce_period=86400, workers=2)
    key = DPoPKey()
    tokens, nonce = signed_in_with_nonce(server, key)
    with server.client() as c:
        r = c.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                 tokens["access_token"]))
        assert_refused(r, 401, "use_dpop_nonce")
        assert r.headers["DPoP-Nonce"] == nonce
        r = c.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                 tokens["access_token"], nonce="bogus"))
        assert_refused(r, 401, "use_dpop_nonce")
        r = c.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                 tokens["access_token"], nonce=nonce))
        assert r.status_code == 200, r.text
    # Two workers, no store call: every worker derives the same nonce (a new connection
    # per request, so both workers answer some of them).
    for _ in range(6):
        with server.client() as fresh:
            r = fresh.get("/v1/me", headers=dpop_headers(key, server, "GET", "/v1/me",
                                                         tokens["access_token"], nonce=nonce))
            assert r.status_code == 200, r.text
            assert r.headers["DPoP-Nonce"] == nonce
    with server.client() as c:
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": DEFAULT_CLIENT_ID}
        r = c.post("/oauth/token", data=form,
                   headers={**FORM, **dpop_headers(key, server, "POST", "/oauth/token")})
        assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce", r.text
        assert r.headers["DPoP-Nonce"] == nonce


def test_an_unbound_sessions_reauth_or_refresh_with_a_proof_binds_it(server):
    key = DPoPKey()
    with server.client() as c:
        username = register(c)
        tokens = c.post("/v1/auth/login",
                        json={"username": username, "password": PASSWORD}).json()
        assert tokens["token_type"] == "Bearer"
        r = c.post("/v1/auth/reauth", json={"password": PASSWORD},
                   headers={"Authorization": f"Bearer {tokens['access_token']}",
                            **dpop_headers(key, server, "POST", "/v1/auth/reauth")})
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "DPoP"
        assert jwt_parts(r.json()["access_token"])[1]["cnf"] == {"jkt": key.jkt}
        # A session from before DPoP is bound at its first refresh with a proof.
        tokens = c.post("/v1/auth/login",
                        json={"username": username, "password": PASSWORD}).json()
    r = refresh(server, key, tokens)
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    assert_refused(refresh(server, None, r.json()), 400)


def test_a_users_jti_set_is_bounded_and_a_proof_past_it_is_refused(server_factory):
    server = server_factory(dpop_jti_limit=10)
    key, tokens = signed_in_key(server)  # the login's proof is the first
    for _ in range(9):
        assert me(server, key, tokens).status_code == 200
    r = me(server, key, tokens)
    assert_refused(r, 401)
    assert "Too many DPoP proofs" in r.json()["detail"]
    assert_refused(refresh(server, key, tokens), 400)
