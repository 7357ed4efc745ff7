"""R2: the OAuth 2.0 endpoints follow their RFCs on a real server on loopback: RFC 8414
metadata, RFC 6749 section 6 refresh at ``/oauth/token`` with section 5.2 errors, RFC 7009
revocation and RFC 7662 introspection, form bodies only, and one session model behind
both faces (the same grace, reuse, binding, idle and absolute rules as ``/v1``)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from latchkey_server.oauth.rfc8414 import validate_metadata

from tests.conftest import TEST_BACKEND, Api
from tests.server.oauth_support import (
    DEFAULT_CLIENT_ID,
    FORM,
    basic,
    cli,
    create_client,
    grace_server_fixtures,
    jwt_parts,
)
from tests.server.ops_support import client_commands_during

server, api = grace_server_fixtures()


@pytest.fixture(scope="module")
def resource(server):
    return create_client(server, "resource", "orders-service")


def token_request(api: Api, refresh_token: str, client_id: str = DEFAULT_CLIENT_ID,
                  **extra: str) -> httpx.Response:
    return api.http.post("/oauth/token", data={"grant_type": "refresh_token",
                                               "refresh_token": refresh_token,
                                               "client_id": client_id, **extra})


def introspect(api: Api, resource: dict[str, str], token: str) -> httpx.Response:
    return api.http.post("/oauth/introspect", data={"token": token},
                         headers=basic(resource["client_id"], resource["client_secret"]))


# -- RFC 8414 -----------------------------------------------------------------------
def test_metadata_has_every_required_field_and_its_issuer_is_the_tokens_iss(server, api):
    r = api.http.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    doc = r.json()
    validate_metadata(doc)
    assert doc["issuer"] == server.base_url  # derived for the quick start on loopback
    assert doc["token_endpoint"] == server.base_url + "/oauth/token"
    assert doc["revocation_endpoint"] == server.base_url + "/oauth/revoke"
    assert doc["introspection_endpoint"] == server.base_url + "/oauth/introspect"
    assert "refresh_token" in doc["grant_types_supported"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]
    assert "client_secret_basic" in doc["introspection_endpoint_auth_methods_supported"]
    assert isinstance(doc["response_types_supported"], list)
    _, tokens = api.new_user_session()
    assert jwt_parts(tokens["access_token"])[1]["iss"] == doc["issuer"]
    assert httpx.get(doc["jwks_uri"]).json()["keys"]


def test_metadata_behind_a_proxy_names_the_configured_https_issuer(server_factory):
    proxied = server_factory(issuer="https://auth.example.com")
    doc = httpx.get(proxied.base_url + "/.well-known/oauth-authorization-server").json()
    AuthorizationServerMetadata(doc).validate_issuer()  # Authlib's https rule holds
    validate_metadata(doc)
    assert doc["issuer"] == "https://auth.example.com"
    assert doc["token_endpoint"] == "https://auth.example.com/oauth/token"


# -- RFC 6749 section 6 -------------------------------------------------------------
def test_token_endpoint_refreshes_a_v1_session_with_the_section_5_1_response(api):
    _, tokens = api.new_user_session()
    r = token_request(api, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"access_token", "token_type", "expires_in", "refresh_token"} <= set(body)
    assert body["token_type"] == "Bearer" and "scope" not in body
    assert body["session_id"] == tokens["session_id"]
    assert body["refresh_token"] != tokens["refresh_token"]
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    assert api.me(body["access_token"]).status_code == 200


def test_one_session_model_a_token_rotated_on_one_face_continues_on_the_other(api):
    _, tokens = api.new_user_session()
    via_oauth = token_request(api, tokens["refresh_token"]).json()
    via_v1 = api.refresh(via_oauth["refresh_token"])
    assert via_v1.status_code == 200 and via_v1.json()["session_id"] == tokens["session_id"]
    again = token_request(api, via_v1.json()["refresh_token"])
    assert again.status_code == 200
    # Inside the grace window a retry of the previous token gets the same successor on
    # either face: the rule is the session's, not the endpoint's.
    retry_v1 = api.refresh(via_v1.json()["refresh_token"]).json()
    assert retry_v1["refresh_token"] == again.json()["refresh_token"]


def test_a_refresh_token_replayed_after_grace_is_invalid_grant_and_ends_the_session(api):
    _, tokens = api.new_user_session()
    new = token_request(api, tokens["refresh_token"]).json()
    time.sleep(2.5)  # the module's grace window is 2 s
    replay = token_request(api, tokens["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert api.me(new["access_token"]).json()["reason"] == "reuse"
    assert token_request(api, new["refresh_token"]).json()["error"] == "invalid_grant"


def test_another_clients_refresh_token_is_invalid_grant_and_changes_nothing(server, api):
    other = create_client(server, "public", "other-app")
    assert "client_secret" not in other
    _, tokens = api.new_user_session()
    r = token_request(api, tokens["refresh_token"], client_id=other["client_id"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert token_request(api, tokens["refresh_token"]).status_code == 200  # still current


def test_token_endpoint_answers_each_section_5_2_error_with_its_status(server, api,
                                                                     resource):
    _, tokens = api.new_user_session()
    refresh = tokens["refresh_token"]
    cases = [
        ({"grant_type": "password", "client_id": DEFAULT_CLIENT_ID}, 400,
         "unsupported_grant_type"),
        ({"refresh_token": refresh, "client_id": DEFAULT_CLIENT_ID}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "client_id": DEFAULT_CLIENT_ID}, 400,
         "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": refresh}, 400, "invalid_client"),
        ({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "nobody"},
         400, "invalid_client"),
        ({"grant_type": "refresh_token", "refresh_token": "lkr_nonsense",
          "client_id": DEFAULT_CLIENT_ID}, 400, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": refresh,
          "client_id": DEFAULT_CLIENT_ID, "scope": "admin"}, 400, "invalid_request"),
    ]
    for form, status, error in cases:
        r = api.http.post("/oauth/token", data=form)
        assert (r.status_code, r.json()["error"]) == (status, error), (form, r.text)
        assert set(r.json()) <= {"error", "error_description"}
        assert r.headers["Cache-Control"] == "no-store"
    # A resource client holds no refresh tokens.
    r = api.http.post("/oauth/token", data={"grant_type": "refresh_token",
                                            "refresh_token": refresh},
                      headers=basic(resource["client_id"], resource["client_secret"]))
    assert (r.status_code, r.json()["error"]) == (400, "unauthorized_client")
    assert token_request(api, refresh).status_code == 200  # none of that spent the token


def test_bad_client_credentials_in_a_header_are_401_with_a_basic_challenge(api, resource):
    for header in (basic(resource["client_id"], "wrong"), basic("nobody", "x"),
                   {"Authorization": "Basic !!!"}, {"Authorization": "Basic w6k6w6k="},
                   {"Authorization": b"Basic \xc3\xa9"}, {"Authorization": "Bearer x"},
                   basic(DEFAULT_CLIENT_ID, "a-secret-the-public-client-has-not")):
        r = api.http.post("/oauth/introspect", data={"token": "x"}, headers=header)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert r.headers["WWW-Authenticate"].startswith("Basic")


def test_a_json_body_or_any_other_content_type_is_invalid_request_not_415(api):
    for kwargs in ({"json": {"grant_type": "refresh_token"}},
                   {"content": b"grant_type=refresh_token", "headers": {"Content-Type":
                                                                         "text/plain"}}):
        r = api.http.post("/oauth/token", **kwargs)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_a_live_token_in_an_oauth_url_is_invalid_request_and_ends_its_session(api):
    _, tokens = api.new_user_session()
    r = api.http.post("/oauth/revoke", params={"token": tokens["refresh_token"]},
                      data={"client_id": DEFAULT_CLIENT_ID})
    assert r.status_code == 400 and r.json() == {
        "error": "invalid_request",
        "error_description": "Send tokens in the form body, never in a URL"}
    assert api.me(tokens["access_token"]).json()["reason"] == "leak"


@pytest.mark.parametrize("body", [
    b"grant_type=refresh_token&grant_type=refresh_token&client_id=latchkey-app",
    b"grant_type=%ff%fe&client_id=latchkey-app",
    b"grant_type=%ed%a0%80&client_id=latchkey-app",  # an encoded lone surrogate
    b"grant_type=refresh%00token&client_id=latchkey-app",
    b"\xff\xfe=\x00",
    b"&".join(b"p%d=1" % i for i in range(100)),
    b"refresh_token=" + b"A" * 5000 + b"&client_id=latchkey-app&grant_type=refresh_token",
    b"client_id=%ZZ&grant_type=refresh_token",
    b"=&=&",
], ids=["repeated", "bad-utf8", "surrogate", "nul", "raw-bytes", "many-fields",
        "long-value", "bad-escape", "empty-names"])
def test_hostile_form_bodies_are_invalid_request_never_a_500(api, body):
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        r = api.http.post(path, content=body, headers=FORM)
        assert r.status_code in (400, 401), (path, r.status_code, r.text)
        assert r.json()["error"] in ("invalid_request", "invalid_client")


def test_a_body_over_the_limit_is_413_in_the_oauth_shape(api):
    r = api.http.post("/oauth/token", content=b"a=" + b"b" * 20000, headers=FORM)
    assert r.status_code == 413 and r.json()["error"] == "invalid_request"


# -- RFC 7009 -----------------------------------------------------------------------
def test_revoking_either_token_ends_the_session_and_unknown_tokens_are_200(api):
    for kind in ("refresh_token", "access_token"):
        _, tokens = api.new_user_session()
        r = api.http.post("/oauth/revoke", data={"token": tokens[kind],
                                                 "token_type_hint": kind,
                                                 "client_id": DEFAULT_CLIENT_ID})
        assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
        assert api.me(tokens["access_token"]).json()["reason"] == "logout"
        assert token_request(api, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        again = api.http.post("/oauth/revoke", data={"token": tokens[kind],
                                                     "client_id": DEFAULT_CLIENT_ID})
        assert again.status_code == 200  # section 2.2: already revoked is not an error
    for junk in ("not-a-token", "lkr_" + "A" * 102, "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJlc2ln"):
        r = api.http.post("/oauth/revoke", data={"token": junk, "token_type_hint": "bogus",
                                                 "client_id": DEFAULT_CLIENT_ID})
        assert r.status_code == 200


def test_a_client_cannot_revoke_a_token_issued_to_another(server, api):
    other = create_client(server, "public", "another-app")
    _, tokens = api.new_user_session()
    for kind in ("refresh_token", "access_token"):
        r = api.http.post("/oauth/revoke", data={"token": tokens[kind],
                                                 "client_id": other["client_id"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert api.me(tokens["access_token"]).status_code == 200


# -- RFC 7662 -----------------------------------------------------------------------
def test_introspection_of_a_live_access_token_has_the_contract_members(server, api,
                                                                       resource):
    _, tokens = api.new_user_session()
    r = introspect(api, resource, tokens["access_token"])
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    claims = jwt_parts(tokens["access_token"])[1]
    assert set(body) == {"active", "sub", "sid", "client_id", "iss", "aud", "exp", "iat",
                         "token_type", "auth_level", "auth_time"}
    assert body["active"] is True and body["client_id"] == DEFAULT_CLIENT_ID
    assert body["sid"] == tokens["session_id"] == claims["sid"]
    assert (body["iss"], body["exp"], body["iat"]) == (server.base_url, claims["exp"],
                                                       claims["iat"])
    assert body["token_type"] == "access_token" and body["auth_level"] == "normal"


def test_introspection_reads_the_client_once_and_checks_the_session_in_one_script(
        server, api, resource, redis_server):
    # Every introspection pays for its client's authentication: the client's record is
    # read once (id, type and secret hash together), then one verify_touch script.
    if TEST_BACKEND == "cluster":
        pytest.skip("LATCHKEY_TEST_BACKEND=cluster: MONITOR watches one node; the round "
                    "trips are counted in the single-Redis run")
    _, tokens = api.new_user_session()
    for _ in range(5):  # the worker's connection made and the script loaded
        assert introspect(api, resource, tokens["access_token"]).json()["active"] is True
    watcher = redis_server.client()
    watcher.ping()
    seen = sorted((client_commands_during(
        watcher, lambda: introspect(api, resource, tokens["access_token"]).raise_for_status())
        for _ in range(5)), key=len)
    # The script runs as a FUNCTION library where the store has them (FCALL), else by SHA.
    assert seen[2] in (["HGET", "FCALL"], ["HGET", "EVALSHA"]), seen


def test_a_token_of_an_ended_session_is_exactly_inactive_at_once(api, resource):
    _, tokens = api.new_user_session()
    assert introspect(api, resource, tokens["refresh_token"]).json()["active"] is True
    r = api.http.post("/v1/auth/logout",
                      headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 204
    for token in (tokens["access_token"], tokens["refresh_token"], "junk", "lkr_x"):
        assert introspect(api, resource, token).json() == {"active": False}


def test_only_the_current_refresh_token_is_active(api, resource):
    _, tokens = api.new_user_session()
    new = token_request(api, tokens["refresh_token"]).json()
    current = introspect(api, resource, new["refresh_token"]).json()
    assert current["active"] is True and current["token_type"] == "refresh_token"
    assert current["sid"] == tokens["session_id"] and "iat" not in current
    # The previous token still works inside its grace window, so it is still active...
    assert introspect(api, resource, tokens["refresh_token"]).json()["active"] is True
    time.sleep(2.5)
    # ... and not after it. Introspecting it never counts as reuse: the session lives.
    assert introspect(api, resource, tokens["refresh_token"]).json() == {"active": False}
    assert api.me(new["access_token"]).status_code == 200


def test_introspection_needs_a_resource_clients_credentials(api, resource):
    _, tokens = api.new_user_session()
    for kwargs in ({"data": {"token": tokens["access_token"]}},
                   {"data": {"token": tokens["access_token"],
                             "client_id": DEFAULT_CLIENT_ID}},
                   {"data": {"token": tokens["access_token"],
                             "client_id": resource["client_id"]}}):
        r = api.http.post("/oauth/introspect", **kwargs)
        assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    r = api.http.post("/oauth/introspect", data={"token": tokens["access_token"],
                                                 "client_secret": resource["client_secret"],
                                                 "client_id": resource["client_id"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_introspection_counts_as_activity_of_the_session(server_factory):
    server = server_factory(access_token_ttl=3, idle_timeout=3, absolute_timeout=60)
    resource = create_client(server, "resource", "keeper")
    api = Api(server.base_url)
    try:
        _, tokens = api.new_user_session()
        for _ in range(4):  # 4.8 s in all: past the 3 s idle limit without the calls
            time.sleep(1.2)
            assert introspect(api, resource, tokens["refresh_token"]).json()["active"]
        assert api.refresh(tokens["refresh_token"]).status_code == 200
    finally:
        api.close()


# -- the client registry and its CLI ------------------------------------------------
def test_clients_cli_creates_lists_and_deletes_audited_and_never_shows_a_secret(
        server, api, redis_server):
    created = cli(server, "clients", "create", "--name", "billing", "--type", "resource")
    assert created.returncode == 0, created.stderr
    new = json.loads(created.stdout)
    assert set(new) == {"client_id", "client_secret"} and len(new["client_secret"]) >= 43
    stored = redis_server.client().hget("lk:{clients}", new["client_id"])
    assert new["client_secret"] not in stored and "secret_hash" in stored
    # Created while the server runs: it works at once.
    _, tokens = api.new_user_session()
    assert introspect(api, new, tokens["access_token"]).json()["active"] is True
    listing = cli(server, "clients", "list")
    assert listing.returncode == 0 and new["client_id"] in listing.stdout
    assert new["client_secret"] not in listing.stdout + listing.stderr
    deleted = cli(server, "clients", "delete", new["client_id"])
    assert deleted.returncode == 0
    assert introspect(api, new, tokens["access_token"]).status_code == 401
    assert cli(server, "clients", "delete", new["client_id"]).returncode == 1
    actions = [line for r in (created, listing, deleted) for line in r.stderr.splitlines()
               if '"admin_action"' in line]
    assert [a for a in ("clients_create", "clients_list", "clients_delete")
            if any(a in line for line in actions)] == ["clients_create", "clients_list",
                                                      "clients_delete"]
    assert all(new["client_secret"] not in line for line in actions)


# -- the same rules as /v1: throttles and binding -----------------------------------
def test_invalid_refresh_tokens_at_the_token_endpoint_spend_the_invalid_token_budget(
        server_factory):
    server = server_factory(invalid_tokens_per_ip=3)
    api = Api(server.base_url)
    try:
        statuses = [token_request(api, "lkr_" + "A" * 102).status_code for _ in range(3)]
        assert statuses == [400, 400, 400]
        refused = token_request(api, "lkr_" + "B" * 102)
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_requests"
        assert int(refused.headers["Retry-After"]) >= 1
        # One budget for both faces: /v1 refuses this address too now.
        assert api.refresh("lkr_" + "C" * 102).status_code == 429
    finally:
        api.close()


def test_binding_enforced_on_the_token_endpoint_as_on_v1(server_factory):
    server = server_factory(binding_policy="enforce")
    api = Api(server.base_url)
    try:
        _, tokens = api.new_user_session(device_id="phone-1")
        moved = token_request(api, tokens["refresh_token"])  # no X-Device-Id: another device
        assert moved.status_code == 400 and moved.json()["error"] == "invalid_grant"
        r = api.me(tokens["access_token"])
        assert r.status_code == 401 and r.json()["reason"] == "binding"
        _, tokens = api.new_user_session(device_id="phone-2")
        ok = api.http.post("/oauth/token", headers={"X-Device-Id": "phone-2"}, data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": DEFAULT_CLIENT_ID})
        assert ok.status_code == 200, ok.text
    finally:
        api.close()
