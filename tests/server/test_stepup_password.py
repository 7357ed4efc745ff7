"""L4: step-up re-authentication and password change each give a new session id and end
the old session; the sensitive action needs a recent step-up; password change ends every
other session. End to end against the real server and redis-server.
"""

from __future__ import annotations

import time

import pytest
from latchkey_server.errors import InvalidCredentials, SessionRevoked
from latchkey_server.extension import services

from tests.conftest import PASSWORD, Api

NEW_PASSWORD = "purple elephant umbrella 42"


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def reauth(api: Api, tokens: dict, password: str = PASSWORD):
    return api.http.post("/v1/auth/reauth", json={"password": password}, headers=bearer(tokens))


def sensitive(api: Api, tokens: dict):
    return api.http.post("/v1/me/sensitive", headers=bearer(tokens))


def change_password(api: Api, tokens: dict, current: str = PASSWORD, new: str = NEW_PASSWORD):
    return api.http.post("/v1/auth/password", headers=bearer(tokens),
                         json={"current_password": current, "new_password": new})


def assert_revoked(api: Api, tokens: dict, reason: str) -> None:
    r = api.me(tokens["access_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_revoked", r.text
    assert r.json()["reason"] == reason
    r = api.refresh(tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_revoked", r.text


# -- step-up ---------------------------------------------------------------------------
def test_reauth_gives_a_new_elevated_session_and_ends_the_old_one(api: Api):
    _, old = api.new_user_session()
    r = reauth(api, old)
    assert r.status_code == 200, r.text
    new = r.json()
    assert r.headers["Cache-Control"] == "no-store"
    assert new["auth_level"] == "elevated"
    assert new["session_id"] != old["session_id"]
    assert_revoked(api, old, "step_up")
    me = api.me(new["access_token"]).json()
    assert me["session_id"] == new["session_id"] and me["auth_level"] == "elevated"


def test_reauth_with_a_wrong_password_keeps_the_session_unchanged(api: Api):
    _, tokens = api.new_user_session()
    r = reauth(api, tokens, "not the password at all")
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    assert api.me(tokens["access_token"]).json()["auth_level"] == "normal"
    assert sensitive(api, tokens).status_code == 403


def test_sensitive_action_without_step_up_is_403_step_up_required(api: Api):
    _, tokens = api.new_user_session()
    r = sensitive(api, tokens)
    assert r.status_code == 403 and r.json()["code"] == "step_up_required"


def test_sensitive_action_works_after_step_up(api: Api):
    _, tokens = api.new_user_session()
    elevated = reauth(api, tokens).json()
    r = sensitive(api, elevated)
    assert r.status_code == 200 and r.json() == {"ok": True}


def test_step_up_window_and_new_absolute_window_are_on_server_time(server_factory):
    server = server_factory(step_up_window=2, absolute_timeout=6, idle_timeout=6,
                            access_token_ttl=6)
    api = Api(server.base_url)
    try:
        _, login = api.new_user_session()
        time.sleep(2.2)
        # Reauth is a full re-authentication: a fresh absolute window, unlike a refresh.
        elevated = reauth(api, login).json()
        assert elevated["absolute_expires_in"] == 6
        assert sensitive(api, elevated).status_code == 200
        # A refresh keeps the level but does not restart the step-up clock.
        refreshed = api.refresh(elevated["refresh_token"]).json()
        assert refreshed["auth_level"] == "elevated"
        time.sleep(3.1)
        r = sensitive(api, refreshed)
        assert r.status_code == 403 and r.json()["code"] == "step_up_required"
        # The session itself is still fine; only the sensitive action needs a new step-up.
        assert api.me(refreshed["access_token"]).status_code == 200
        again = reauth(api, refreshed).json()
        assert sensitive(api, again).status_code == 200
    finally:
        api.close()


# -- password change -------------------------------------------------------------------
def test_password_change_ends_every_other_session_and_reissues_the_callers(api: Api):
    username = api.register()
    caller, *others = [api.login(username) for _ in range(3)]
    _, bystander = api.new_user_session()

    r = change_password(api, caller)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["session_id"] != caller["session_id"]
    assert r.headers["Cache-Control"] == "no-store"

    assert_revoked(api, caller, "password_change")
    for tokens in others:
        assert_revoked(api, tokens, "password_change")
    assert api.me(new["access_token"]).status_code == 200
    sessions = api.http.get("/v1/auth/sessions", headers=bearer(new)).json()["sessions"]
    assert [s["session_id"] for s in sessions] == [new["session_id"]]
    assert api.me(bystander["access_token"]).status_code == 200


def test_after_password_change_the_old_password_is_refused(api: Api):
    username, tokens = api.new_user_session()
    assert change_password(api, tokens).status_code == 200
    old = api.http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert old.status_code == 401 and old.json()["code"] == "invalid_credentials"
    assert api.login(username, NEW_PASSWORD)["auth_level"] == "normal"
    new_session = api.login(username, NEW_PASSWORD)
    assert reauth(api, new_session, PASSWORD).status_code == 401


def test_password_change_with_a_wrong_current_password_changes_nothing(api: Api):
    username = api.register()
    caller, other = api.login(username), api.login(username)
    r = change_password(api, caller, current="not the password at all")
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    assert api.me(caller["access_token"]).status_code == 200
    assert api.me(other["access_token"]).status_code == 200
    api.login(username, PASSWORD)


@pytest.mark.parametrize("weak", ["short", "password123", PASSWORD])
def test_password_change_to_a_weak_or_unchanged_password_is_refused(api: Api, weak: str):
    username = api.register()
    caller, other = api.login(username), api.login(username)
    r = change_password(api, caller, new=weak)
    assert r.status_code == 422 and r.json()["code"] == "weak_password"
    assert api.me(caller["access_token"]).status_code == 200
    assert api.me(other["access_token"]).status_code == 200
    api.login(username, PASSWORD)


def test_password_change_is_refused_if_the_hash_changed_since_it_was_verified(app, client):
    """The store changes the password only if the hash is still the verified one, so two
    racing changes (or an attacker racing the owner) cannot both win."""
    username = "racer-" + str(time.monotonic_ns())
    client.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    with app.app_context():
        svc = services()
        user_id = svc.store.user_id_for(username)
        stale = svc.store.get_user(user_id)["p"]
        svc.store.set_password_hash(user_id, svc.passwords.hash("someone else changed it"),
                                    verified_hash=stale)
        with pytest.raises(InvalidCredentials):
            svc.store.create_session(
                user_id=user_id, session_id="s" * 32, refresh_hash="h", auth_level="normal",
                auth_time=0, device_id="", device_name="", user_agent="", ip="",
                end_others_reason="password_change",
                new_password_hash=svc.passwords.hash(NEW_PASSWORD), verified_password_hash=stale)
        assert svc.passwords.verify(svc.store.get_user(user_id)["p"], "someone else changed it")
        assert svc.store.list_sessions(user_id) == []


def test_a_remote_sign_out_racing_a_password_change_wins_and_nothing_changes(app, client):
    """The caller's request was authenticated, then another device signed its session out
    before the replacing script ran: no new session, no new password, 401 for the caller."""
    username = "raced-" + str(time.monotonic_ns())
    body = {"username": username, "password": PASSWORD}
    client.post("/v1/auth/register", json=body)
    caller = client.post("/v1/auth/login", json=body).get_json()
    with app.app_context():
        svc = services()
        user_id = svc.store.user_id_for(username)
        verified = svc.store.get_user(user_id)["p"]
        assert svc.store.revoke_session(user_id, caller["session_id"], "remote") == "revoked"
        with pytest.raises(SessionRevoked) as raised:
            svc.store.create_session(
                user_id=user_id, session_id="n" * 32, refresh_hash="h", auth_level="normal",
                auth_time=0, device_id="", device_name="", user_agent="", ip="",
                replaces=caller["session_id"], replaced_reason="password_change",
                end_others_reason="password_change",
                new_password_hash=svc.passwords.hash(NEW_PASSWORD), verified_password_hash=verified)
        assert raised.value.extra == {"reason": "remote"}
        assert svc.store.get_user(user_id)["p"] == verified
        assert svc.store.list_sessions(user_id) == []


def test_wrong_current_passwords_at_password_change_are_throttled(server_factory):
    """A stolen access token must not become an unmetered password oracle (D2 budgets)."""
    server = server_factory(login_failures_per_account=2)
    api = Api(server.base_url)
    try:
        _, tokens = api.new_user_session()
        for _ in range(2):
            assert change_password(api, tokens, current="wrong password 123").status_code == 401
        r = change_password(api, tokens)
        assert r.status_code == 429 and r.json()["code"] == "too_many_requests"
        assert int(r.headers["Retry-After"]) > 0
        assert api.me(tokens["access_token"]).status_code == 200
    finally:
        api.close()
