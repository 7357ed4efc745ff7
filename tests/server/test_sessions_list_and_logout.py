"""L1 beyond "this session": logout-all scopes, the session list and remote sign-out.

End to end against the real server and redis-server. Every list and revoke test uses two
users, to prove one can never see or end the other's sessions.
"""

from __future__ import annotations

import re
import secrets

import httpx

from tests.conftest import Api, ServerProcess

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def login_many(api: Api, username: str, n: int) -> list[dict]:
    return [api.login(username, device_name=f"phone-{i}") for i in range(n)]


def assert_revoked(api: Api, tokens: dict, reason: str) -> None:
    """Both the access token and the refresh token of a session are refused, with why."""
    r = api.me(tokens["access_token"])
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "session_revoked" and r.json()["reason"] == reason
    r = api.refresh(tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_revoked", r.text


def session_list(api: Api, tokens: dict) -> list[dict]:
    r = api.http.get("/v1/auth/sessions", headers=bearer(tokens))
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    return r.json()["sessions"]


# -- logout-all ------------------------------------------------------------------------
def test_logout_all_refuses_every_token_of_every_session_on_the_next_request(api: Api):
    username = api.register()
    caller, *others = login_many(api, username, 3)
    _, bystander = api.new_user_session()

    r = api.http.post("/v1/auth/logout-all", headers=bearer(caller))
    assert r.status_code == 204

    assert_revoked(api, caller, "logout")
    for tokens in others:
        assert_revoked(api, tokens, "remote")
    assert api.me(bystander["access_token"]).status_code == 200


def test_logout_all_with_scope_others_keeps_only_the_callers_session(api: Api):
    username = api.register()
    caller, *others = login_many(api, username, 3)
    _, bystander = api.new_user_session()

    r = api.http.post("/v1/auth/logout-all", json={"scope": "others"}, headers=bearer(caller))
    assert r.status_code == 204

    for tokens in others:
        assert_revoked(api, tokens, "remote")
    assert api.me(caller["access_token"]).status_code == 200
    assert api.refresh(caller["refresh_token"]).status_code == 200
    assert [s["session_id"] for s in session_list(api, caller)] == [caller["session_id"]]
    assert api.me(bystander["access_token"]).status_code == 200


def test_logout_all_refuses_an_unknown_scope_and_ends_nothing(api: Api):
    username = api.register()
    caller, other = login_many(api, username, 2)
    r = api.http.post("/v1/auth/logout-all", json={"scope": "everyone"}, headers=bearer(caller))
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert api.me(caller["access_token"]).status_code == 200
    assert api.me(other["access_token"]).status_code == 200


def test_logout_all_needs_a_live_session(api: Api):
    r = api.http.post("/v1/auth/logout-all")
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


# -- the session list ------------------------------------------------------------------
def test_session_list_shows_device_agent_ip_times_level_and_current(api: Api):
    username = api.register()
    first = api.login(username, device_name="Ada's Pixel")
    r = api.http.post("/v1/auth/login", json={"username": username,
                                              "password": "correct horse battery staple",
                                              "device_name": "Ada's iPad"},
                      headers={"User-Agent": "LatchkeyDemo/1.0 (iPadOS 17)"})
    second = r.json()

    sessions = session_list(api, second)
    assert [s["session_id"] for s in sessions] == [first["session_id"], second["session_id"]]
    older, newer = sessions
    assert set(newer) == {"session_id", "device_name", "user_agent", "ip", "created_at",
                          "last_seen_at", "expires_at", "auth_level", "current"}
    assert (older["device_name"], newer["device_name"]) == ("Ada's Pixel", "Ada's iPad")
    assert newer["user_agent"] == "LatchkeyDemo/1.0 (iPadOS 17)"
    assert older["user_agent"].startswith("python-httpx/")
    assert newer["ip"] == older["ip"] == "127.0.0.1"
    assert (older["current"], newer["current"]) == (False, True)
    assert newer["auth_level"] == "normal"
    for s in sessions:
        for field in ("created_at", "last_seen_at", "expires_at"):
            assert RFC3339_UTC.fullmatch(s[field]), s[field]
        assert s["created_at"] <= s["last_seen_at"] < s["expires_at"]
    # The device id binds the session; it is never shown (it would help forge the binding).
    assert "device_id" not in newer


def test_session_list_shows_only_the_callers_own_sessions(api: Api):
    alice = api.register()
    alice_sessions = login_many(api, alice, 2)
    bob = api.register()
    bob_session = api.login(bob)

    alice_ids = {s["session_id"] for s in session_list(api, alice_sessions[0])}
    bob_ids = {s["session_id"] for s in session_list(api, bob_session)}
    assert alice_ids == {t["session_id"] for t in alice_sessions}
    assert bob_ids == {bob_session["session_id"]}


def test_session_list_leaves_out_ended_sessions(api: Api):
    username = api.register()
    kept, ended = login_many(api, username, 2)
    api.http.post("/v1/auth/logout", headers=bearer(ended))
    assert [s["session_id"] for s in session_list(api, kept)] == [kept["session_id"]]


# -- remote sign-out -------------------------------------------------------------------
def test_remote_sign_out_refuses_that_sessions_tokens_on_the_next_request(api: Api):
    username = api.register()
    phone, tablet = login_many(api, username, 2)

    r = api.http.delete(f"/v1/auth/sessions/{tablet['session_id']}", headers=bearer(phone))
    assert r.status_code == 204

    assert_revoked(api, tablet, "remote")
    assert api.me(phone["access_token"]).status_code == 200
    assert [s["session_id"] for s in session_list(api, phone)] == [phone["session_id"]]


def test_another_users_session_id_answers_404_exactly_like_an_unknown_one(api: Api):
    _, alice = api.new_user_session()
    _, bob = api.new_user_session()

    theirs = api.http.delete(f"/v1/auth/sessions/{bob['session_id']}", headers=bearer(alice))
    unknown = api.http.delete(f"/v1/auth/sessions/{secrets.token_urlsafe(24)}",
                              headers=bearer(alice))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert theirs.json()["code"] == "not_found"
    # Bob's session is untouched.
    assert api.me(bob["access_token"]).status_code == 200
    assert api.refresh(bob["refresh_token"]).status_code == 200


def test_malformed_or_already_ended_session_ids_answer_404(api: Api):
    username = api.register()
    caller, other = login_many(api, username, 2)
    for bad in ("x", "a" * 31, "a" * 33, "%2e%2e", "a" * 31 + "!"):
        r = api.http.delete(f"/v1/auth/sessions/{bad}", headers=bearer(caller))
        assert r.status_code == 404, (bad, r.text)
    assert api.http.delete(f"/v1/auth/sessions/{other['session_id']}",
                           headers=bearer(caller)).status_code == 204
    again = api.http.delete(f"/v1/auth/sessions/{other['session_id']}", headers=bearer(caller))
    assert again.status_code == 404


def test_ending_the_current_session_by_id_is_a_logout(api: Api):
    _, tokens = api.new_user_session()
    r = api.http.delete(f"/v1/auth/sessions/{tokens['session_id']}", headers=bearer(tokens))
    assert r.status_code == 204
    assert_revoked(api, tokens, "logout")


def test_session_endpoints_are_in_the_served_openapi_document(live_server: ServerProcess,
                                                              app):
    doc = httpx.get(live_server.base_url + "/openapi.json").json()
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.endpoint.startswith(("sessions.", "account.", "admin."))}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served <= documented
    assert {("/v1/auth/logout-all", "post"), ("/v1/auth/sessions", "get"),
            ("/v1/auth/sessions/{session_id}", "delete"), ("/v1/auth/reauth", "post"),
            ("/v1/auth/password", "post"), ("/v1/me/sensitive", "post")} <= served
