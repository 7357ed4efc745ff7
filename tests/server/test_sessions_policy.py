"""L5: concurrent sessions are a policy: a maximum per user (oldest evicted) or single
session mode. End to end with the limits set low on a real server and redis-server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Api, ServerProcess


@pytest.fixture(scope="module")
def capped(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One server with MAX_SESSIONS_PER_USER=2 shared by this module."""
    return module_server_factory(max_sessions_per_user=2)


def assert_evicted(api: Api, tokens: dict) -> None:
    r = api.me(tokens["access_token"])
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "session_revoked" and r.json()["reason"] == "evicted"
    r = api.refresh(tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_revoked"


def live_ids(api: Api, tokens: dict) -> list[str]:
    r = api.http.get("/v1/auth/sessions",
                     headers={"Authorization": f"Bearer {tokens['access_token']}"})
    return [s["session_id"] for s in r.json()["sessions"]]


def test_max_sessions_per_user_evicts_the_oldest_of_that_user_only(capped):
    api = Api(capped.base_url)
    try:
        alice = api.register()
        bob, bob_tokens = api.new_user_session()
        first, second = api.login(alice), api.login(alice)
        third = api.login(alice)
        assert_evicted(api, first)
        assert live_ids(api, third) == [second["session_id"], third["session_id"]]
        fourth = api.login(alice)
        assert_evicted(api, second)
        assert live_ids(api, fourth) == [third["session_id"], fourth["session_id"]]
        # Another user's logins never count against (or evict) Alice's.
        assert api.me(bob_tokens["access_token"]).status_code == 200
        api.login(bob)
        assert api.me(third["access_token"]).status_code == 200
    finally:
        api.close()


def test_step_up_replaces_the_session_without_evicting_another(capped):
    api = Api(capped.base_url)
    try:
        username = api.register()
        first, second = api.login(username), api.login(username)
        r = api.http.post("/v1/auth/reauth", json={"password": "correct horse battery staple"},
                          headers={"Authorization": f"Bearer {second['access_token']}"})
        assert r.status_code == 200
        assert api.me(first["access_token"]).status_code == 200
        assert live_ids(api, first) == [first["session_id"], r.json()["session_id"]]
    finally:
        api.close()


def test_single_session_mode_ends_the_previous_session_on_a_new_login(server_factory):
    server = server_factory(single_session="true")
    api = Api(server.base_url)
    try:
        username = api.register()
        _, other_user = api.new_user_session()
        first = api.login(username)
        second = api.login(username)
        assert_evicted(api, first)
        assert live_ids(api, second) == [second["session_id"]]
        third = api.login(username)
        assert_evicted(api, second)
        assert api.me(third["access_token"]).status_code == 200
        assert api.me(other_user["access_token"]).status_code == 200
    finally:
        api.close()
