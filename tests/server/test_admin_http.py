"""D5 over HTTP: the admin view of other users' sessions needs the admin role plus a
recent step-up, and every call, allowed or refused, is audited. Real server (conftest's
``live_server``) and redis.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import (
    PASSWORD,
    VENV_BIN,
    Api,
    ServerProcess,
    unique_username,
)


@pytest.fixture(scope="module")
def live_server(module_server_factory) -> ServerProcess:
    """This module's server: the admin HTTP view is off unless ADMIN_HTTP turns it on."""
    return module_server_factory(admin_http="true")


@pytest.fixture
def api(live_server: ServerProcess) -> Iterator[Api]:
    client = Api(live_server.base_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin_name(live_server: ServerProcess) -> str:
    username = unique_username("admin")
    r = subprocess.run([str(VENV_BIN / "latchkey-server"), "users", "create", "--username",
                        username, "--role", "admin", "--password-stdin"], env=live_server.env,
                       input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return username


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def step_up(api: Api, tokens: dict) -> dict:
    r = api.http.post("/v1/auth/reauth", json={"password": PASSWORD}, headers=bearer(tokens))
    assert r.status_code == 200, r.text
    return r.json()


def admin_events(server: ServerProcess) -> list[dict]:
    return [json.loads(line) for line in server.logs().splitlines()
            if line.startswith("{") and '"admin_action"' in line]


def test_a_non_admin_gets_404_even_after_step_up_and_is_audited(live_server, api):
    bob, _ = api.new_user_session()
    _, mallory = api.new_user_session()
    mallory = step_up(api, mallory)
    r = api.http.get("/v1/admin/sessions", params={"username": bob}, headers=bearer(mallory))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = api.http.post("/v1/admin/sessions/revoke", json={"username": bob},
                      headers=bearer(mallory))
    assert r.status_code == 404
    outcomes = [(e["action"], e["outcome"]) for e in admin_events(live_server)[-2:]]
    assert outcomes == [("sessions_list", "denied_role"), ("sessions_revoke", "denied_role")]


def test_an_admin_without_a_recent_step_up_gets_403_step_up_required(live_server, api, admin_name):
    bob, _ = api.new_user_session()
    admin = api.login(admin_name)
    r = api.http.get("/v1/admin/sessions", params={"username": bob}, headers=bearer(admin))
    assert r.status_code == 403 and r.json()["code"] == "step_up_required"
    assert admin_events(live_server)[-1]["outcome"] == "denied_step_up"


def test_a_stepped_up_admin_lists_and_ends_another_users_sessions(live_server, api, admin_name):
    bob = api.register()
    bob_sessions = [api.login(bob, device_name=f"bob-{i}") for i in range(3)]
    admin = step_up(api, api.login(admin_name))

    r = api.http.get("/v1/admin/sessions", params={"username": bob}, headers=bearer(admin))
    assert r.status_code == 200, r.text
    listed = r.json()["sessions"]
    assert [s["session_id"] for s in listed] == [t["session_id"] for t in bob_sessions]
    assert [s["device_name"] for s in listed] == ["bob-0", "bob-1", "bob-2"]
    assert not any(s["current"] for s in listed)

    r = api.http.post("/v1/admin/sessions/revoke", headers=bearer(admin),
                      json={"username": bob, "session_id": bob_sessions[0]["session_id"]})
    assert r.status_code == 204
    assert api.me(bob_sessions[0]["access_token"]).json()["reason"] == "admin"
    assert api.me(bob_sessions[1]["access_token"]).status_code == 200

    r = api.http.post("/v1/admin/sessions/revoke", headers=bearer(admin),
                      json={"username": bob})
    assert r.status_code == 204
    for tokens in bob_sessions[1:]:
        assert api.me(tokens["access_token"]).json()["reason"] == "admin"
    assert api.me(admin["access_token"]).status_code == 200

    audited = [(e["action"], e["outcome"], e["via"]) for e in admin_events(live_server)[-3:]]
    assert audited == [("sessions_list", "ok", "http"), ("sessions_revoke", "revoked", "http"),
                       ("sessions_revoke_all", "ok", "http")]
    # The target is named in the query or body only: its username never reaches the log.
    assert bob not in live_server.logs()


def test_admin_revoke_of_an_unknown_user_or_session_is_404(live_server, api, admin_name):
    admin = step_up(api, api.login(admin_name))
    bob, bob_tokens = api.new_user_session()
    r = api.http.post("/v1/admin/sessions/revoke", headers=bearer(admin),
                      json={"username": unique_username()})
    assert r.status_code == 404
    r = api.http.post("/v1/admin/sessions/revoke", headers=bearer(admin),
                      json={"username": bob, "session_id": "A" * 32})
    assert r.status_code == 404
    assert api.me(bob_tokens["access_token"]).status_code == 200
