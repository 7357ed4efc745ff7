"""End-to-end proof of the server core against a real server and a real redis-server.

Covers T2, T4, T5 (JWKS), X1, X3, L1 (this session), L2, L3 and D1 for the server.
"""

from __future__ import annotations

import concurrent.futures
import stat
import threading
import time

import httpx
import jwt
import pytest

from tests.conftest import PASSWORD, Api, unique_username
from tests.server.store_support import age_session, forget_session, session_state


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- sign-in and the profile ---------------------------------------------------------
def test_login_returns_contract_token_response_with_no_store(api: Api):
    username = api.register()
    r = api.http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token",
                         "session_id", "idle_timeout", "absolute_expires_in", "auth_level"}
    assert body["token_type"] == "Bearer" and body["auth_level"] == "normal"
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    me = api.me(body["access_token"]).json()
    assert me["username"] == username and me["session_id"] == body["session_id"]


def test_access_token_claims_hold_no_username(api: Api):
    username, tokens = api.new_user_session()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert username not in str(claims)
    assert username not in tokens["refresh_token"] and username not in tokens["session_id"]


def test_third_party_verifies_access_token_with_published_jwks(api: Api):
    _, tokens = api.new_user_session()
    jwks = api.http.get("/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims = jwt.decode(tokens["access_token"], key, algorithms=["EdDSA"],
                        audience="latchkey-api")
    assert claims["sid"] == tokens["session_id"]


def test_usernames_are_unique_without_regard_to_case(api: Api):
    username = api.register(unique_username("Case"))
    r = api.http.post("/v1/auth/register", json={"username": username.upper(),
                                                 "password": PASSWORD})
    assert r.status_code == 409 and r.json()["code"] == "username_taken"


@pytest.mark.parametrize("password", ["short", "password123", "1234567890", "aaaaaaaaaaaa"])
def test_weak_passwords_are_refused(api: Api, password: str):
    r = api.http.post("/v1/auth/register", json={"username": unique_username(),
                                                 "password": password})
    assert r.status_code == 422 and r.json()["code"] == "weak_password"


def test_unknown_user_and_wrong_password_get_the_same_answer(api: Api):
    username = api.register()
    wrong = api.http.post("/v1/auth/login", json={"username": username, "password": "x" * 12})
    unknown = api.http.post("/v1/auth/login", json={"username": unique_username(),
                                                    "password": "x" * 12})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


# -- L1: logout ends the session on the server ----------------------------------------
def test_logout_refuses_the_access_token_on_the_very_next_request(api: Api):
    _, tokens = api.new_user_session()
    assert api.me(tokens["access_token"]).status_code == 200
    r = api.http.post("/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert r.status_code == 204
    after = api.me(tokens["access_token"])
    assert after.status_code == 401
    assert (after.json()["code"], after.json()["reason"]) == ("session_revoked", "logout")
    assert after.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert api.refresh(tokens["refresh_token"]).json()["code"] == "session_revoked"


def test_logout_with_refresh_token_in_body_when_access_token_is_gone(api: Api):
    _, tokens = api.new_user_session()
    r = api.http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 204
    assert api.me(tokens["access_token"]).json()["code"] == "session_revoked"
    again = api.http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 204  # idempotent


def test_logout_with_malformed_token_is_401(api: Api):
    r = api.http.post("/v1/auth/logout", json={"refresh_token": "lkr_nope"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = api.http.post("/v1/auth/logout", headers=bearer("not-a-jwt"))
    assert r.status_code == 401


# -- T2: strict acceptance ------------------------------------------------------------
def test_well_formed_but_unknown_session_is_refused(api: Api, live_server, redis_server):
    _, tokens = api.new_user_session()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forget_session(redis_server.client(), claims["sub"], claims["sid"])  # the store lost it
    r = api.me(tokens["access_token"])
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert "unknown_session_token" in live_server.logs()


# -- L3: rotation -----------------------------------------------------------------------
def test_every_refresh_rotates_and_keeps_the_session_id(api: Api):
    _, tokens = api.new_user_session()
    r = api.refresh(tokens["refresh_token"])
    assert r.status_code == 200
    new = r.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["session_id"] == tokens["session_id"]
    assert r.headers["Cache-Control"] == "no-store"
    assert api.me(new["access_token"]).status_code == 200


def test_retry_inside_grace_window_gets_the_same_successor(api: Api):
    _, tokens = api.new_user_session()
    first = api.refresh(tokens["refresh_token"]).json()
    retry = api.refresh(tokens["refresh_token"]).json()
    assert retry["refresh_token"] == first["refresh_token"]
    assert api.refresh(first["refresh_token"]).status_code == 200


def test_concurrent_refreshes_of_one_token_yield_one_successor(api: Api, live_server):
    _, tokens = api.new_user_session()
    barrier = threading.Barrier(8)

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server.base_url, timeout=15) as http:
            barrier.wait()
            return http.post("/v1/auth/refresh",
                             json={"refresh_token": tokens["refresh_token"]})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["refresh_token"] for r in results}) == 1


def test_reuse_after_grace_window_revokes_the_whole_session(server_factory):
    server = server_factory(refresh_reuse_grace=1)
    api = Api(server.base_url)
    _, tokens = api.new_user_session()
    successor = api.refresh(tokens["refresh_token"]).json()
    time.sleep(1.3)
    stolen = api.refresh(tokens["refresh_token"])
    assert stolen.status_code == 401 and stolen.json()["code"] == "refresh_token_reused"
    assert api.me(successor["access_token"]).json()["reason"] == "reuse"
    assert api.refresh(successor["refresh_token"]).json()["code"] == "session_revoked"
    assert "refresh_token_reused" in server.logs()


def test_replay_of_an_older_ancestor_is_detected_as_reuse(api: Api):
    _, tokens = api.new_user_session()
    chain = [tokens["refresh_token"]]
    for _ in range(3):
        chain.append(api.refresh(chain[-1]).json()["refresh_token"])
    r = api.refresh(chain[0])  # generation 0 while the session is at generation 3
    assert r.status_code == 401 and r.json()["code"] == "refresh_token_reused"
    assert api.refresh(chain[-1]).json()["code"] == "session_revoked"


def test_forged_refresh_token_for_a_real_session_does_not_end_it(api: Api):
    _, tokens = api.new_user_session()
    real = tokens["refresh_token"]
    forged = real[:-10] + ("A" * 10 if not real.endswith("A" * 10) else "B" * 10)
    r = api.refresh(forged)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    assert api.refresh(real).status_code == 200


# -- L2: timeouts on server time --------------------------------------------------------
def test_idle_timeout_is_enforced_from_the_stores_last_seen(api: Api, redis_server):
    _, tokens = api.new_user_session()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    # The access token is still valid by its own exp; only the server's record ages.
    age_session(redis_server.client(), claims["sub"], claims["sid"], 31 * 60 * 1000)
    r = api.me(tokens["access_token"])
    assert r.status_code == 401
    assert r.json()["code"] == "session_expired" and r.json()["reason"] == "idle"


def test_idle_session_cannot_be_refreshed_back_to_life(server_factory):
    server = server_factory(idle_timeout=2, access_token_ttl=1, absolute_timeout=60)
    api = Api(server.base_url)
    _, tokens = api.new_user_session()
    time.sleep(2.3)
    r = api.refresh(tokens["refresh_token"])
    assert r.status_code == 401
    assert (r.json()["code"], r.json()["reason"]) == ("session_expired", "idle")
    assert "session_expired" in server.logs()


def test_absolute_timeout_is_never_extended_by_refresh(server_factory):
    server = server_factory(idle_timeout=3, access_token_ttl=1, absolute_timeout=4)
    api = Api(server.base_url)
    _, tokens = api.new_user_session()
    assert tokens["absolute_expires_in"] == 4
    current = tokens
    deadline = time.monotonic() + 6
    outcome = None
    while time.monotonic() < deadline:
        time.sleep(0.8)
        r = api.refresh(current["refresh_token"])
        if r.status_code != 200:
            outcome = r.json()
            break
        assert r.json()["absolute_expires_in"] <= current["absolute_expires_in"]
        current = r.json()
    assert outcome is not None
    assert (outcome["code"], outcome["reason"]) == ("session_expired", "absolute")


def test_expired_access_token_says_token_expired(server_factory):
    server = server_factory(idle_timeout=10, access_token_ttl=1)
    api = Api(server.base_url)
    _, tokens = api.new_user_session()
    time.sleep(1.5)
    r = api.me(tokens["access_token"])
    assert r.status_code == 401 and r.json()["code"] == "token_expired"


# -- X1 and X3: transport ----------------------------------------------------------------
@pytest.mark.parametrize("param", ["access_token", "token", "jwt", "sid", "Session_Id"])
def test_token_in_query_is_refused_on_any_path_and_method(api: Api, param: str):
    for method, path in (("GET", "/v1/me"), ("POST", "/v1/auth/refresh"),
                         ("GET", "/healthz"), ("DELETE", "/nowhere")):
        r = api.http.request(method, path, params={param: "x"})
        assert r.status_code == 400 and r.json()["code"] == "token_in_url"


def test_live_token_in_url_revokes_its_session_and_never_reaches_the_log(api: Api,
                                                                         live_server):
    _, tokens = api.new_user_session()
    r = api.http.get("/v1/me", params={"access_token": tokens["access_token"]})
    assert r.status_code == 400 and r.json()["code"] == "token_in_url"
    assert api.me(tokens["access_token"]).json()["reason"] == "leak"
    _, other = api.new_user_session()
    r = api.http.get(f"/v1/files/{other['refresh_token']}")
    assert r.json()["code"] == "token_in_url"
    assert api.refresh(other["refresh_token"]).json()["reason"] == "leak"
    logs = live_server.logs()
    assert tokens["access_token"] not in logs and other["refresh_token"] not in logs
    assert "token_in_url" in logs


def test_trace_is_refused_and_errors_are_problem_json(api: Api):
    assert api.http.request("TRACE", "/v1/me").status_code == 405
    for r in (api.http.get("/missing"), api.http.delete("/v1/me"),
              api.http.get("/v1/me")):
        assert r.headers["Content-Type"] == "application/problem+json"
        assert {"type", "title", "status", "detail", "code"} <= set(r.json())
        assert "Traceback" not in r.text and "Werkzeug" not in r.text


def test_missing_bearer_gets_challenge_and_problem(api: Api):
    r = api.http.get("/v1/me")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


def test_oversized_and_non_json_bodies_are_refused(api: Api):
    big = api.http.post("/v1/auth/login", content=b"{" + b" " * 20000 + b"}",
                        headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
    form = api.http.post("/v1/auth/login", data={"username": "a", "password": "b"})
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type"
    for payload in (b"[]", b"not json", b'{"username": 5, "password": "x"}'):
        r = api.http.post("/v1/auth/login", content=payload,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_hsts_is_sent_when_configured(server_factory):
    server = server_factory(hsts="true")
    r = httpx.get(server.base_url + "/healthz")
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


def test_no_server_version_leaks(api: Api):
    r = api.http.get("/healthz")
    assert not any(ch.isdigit() for ch in r.headers.get("Server", ""))


# -- T1 key material, D1 logs --------------------------------------------------------------
def test_key_material_is_created_with_mode_0600(live_server):
    keys = list((live_server.instance_path / "keys").iterdir())
    secrets_ = [k for k in keys if k.suffix in (".pem", ".key")]
    assert secrets_
    for path in secrets_:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_full_flow_at_debug_and_redis_dump_hold_no_token(server_factory, redis_server):
    server = server_factory(log_level="DEBUG")
    api = Api(server.base_url)
    username, tokens = api.new_user_session()
    seen = [tokens["access_token"], tokens["refresh_token"], tokens["session_id"], PASSWORD,
            username]
    r = api.refresh(tokens["refresh_token"]).json()
    seen += [r["access_token"], r["refresh_token"]]
    api.me(r["access_token"])
    api.http.get("/v1/me", params={"token": r["access_token"]})
    api.http.post("/v1/auth/logout", json={"refresh_token": r["refresh_token"]})
    logs = server.logs()
    for secret in seen:
        assert secret not in logs
    assert "session_created" in logs and "session_refreshed" in logs
    client = redis_server.client(decode=False)  # bytes: session records are packed
    values: list[bytes] = []
    for key in client.scan_iter("lk:*"):
        if client.type(key) == b"hash":
            values += [b for pair in client.hgetall(key).items() for b in pair]
        elif client.type(key) == b"string":
            values.append(client.get(key))
    dump = b" ".join(values)
    user_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    # The dump holds the session's packed record (ended by the token in the URL above),
    # so the check bites.
    assert session_state(redis_server.client(), user_id, tokens["session_id"]) == (
        "revoked", "leak")
    for secret in (tokens["refresh_token"], r["refresh_token"], PASSWORD):
        assert secret.encode() not in dump


def test_token_named_parameter_without_a_real_token_is_still_reported(api: Api, live_server):
    # Reported as noise (none of our tokens leaked), not as the token_in_url alert.
    event = '"token_shaped_value_in_url"'
    before = live_server.logs().count(event)
    r = api.http.get("/v1/me", params={"refresh_token": "not-a-token"})
    assert r.status_code == 400 and r.json()["code"] == "token_in_url"
    deadline = time.monotonic() + 5
    while live_server.logs().count(event) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_server.logs().count(event) > before
