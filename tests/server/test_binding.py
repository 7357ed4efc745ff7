"""D3: a session is bound to the device id and user agent it was issued to. A change is
reported (BINDING_POLICY=report, once per session and change) or also ends the session
(enforce, reason ``binding``); ``off`` ignores it. Real server, real redis-server.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import (
    PASSWORD,
    TEST_BACKEND,
    ServerProcess,
    unique_username,
)
from tests.server.ops_support import client_commands_during

DEVICE = {"User-Agent": "LatchkeyDemo/1.0 (Android 14)", "X-Device-Id": "device-A-1234"}


def device_client(server: ServerProcess, **headers: str) -> httpx.Client:
    """A client that sends this device's headers on every request, as the SDK does."""
    return httpx.Client(base_url=server.base_url, timeout=10, headers={**DEVICE, **headers})


def sign_in(server: ServerProcess, **login_extra: str) -> dict:
    username = unique_username()
    with device_client(server) as c:
        assert c.post("/v1/auth/register", json={"username": username,
                                                 "password": PASSWORD}).status_code == 201
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD,
                                           **login_extra})
        assert r.status_code == 200, r.text
        return r.json()


def me(server: ServerProcess, tokens: dict, **headers: str) -> httpx.Response:
    with device_client(server, **headers) as c:
        return c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})


def refresh(server: ServerProcess, tokens: dict, **headers: str) -> httpx.Response:
    with device_client(server, **headers) as c:
        return c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})


def events(server: ServerProcess, name: str) -> list[dict]:
    out = []
    for line in server.logs().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            doc = json.loads(line)
            if doc.get("event") == name:
                out.append(doc)
    return out


@pytest.fixture(scope="module")
def enforcing(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One server with BINDING_POLICY=enforce shared by this module's enforce tests."""
    return module_server_factory(binding_policy="enforce")


def test_report_policy_reports_each_change_once_and_keeps_the_session(server_factory):
    server = server_factory(binding_policy="report")
    tokens = sign_in(server, device_id=DEVICE["X-Device-Id"])
    assert me(server, tokens).status_code == 200
    assert events(server, "binding_changed") == []

    for _ in range(3):
        assert me(server, tokens, **{"User-Agent": "curl/8.5.0"}).status_code == 200
    reported = events(server, "binding_changed")
    assert len(reported) == 1
    assert reported[0]["changed"] == "user_agent" and reported[0]["policy"] == "report"
    assert reported[0]["revoked"] is False and reported[0]["session_ref"]

    assert refresh(server, tokens, **{"X-Device-Id": "device-B"}).status_code == 200
    reported = events(server, "binding_changed")
    assert len(reported) == 2 and reported[1]["changed"] == "device_id"
    # Which field changed is logged; the values themselves are not.
    assert "curl/8.5.0" not in server.logs() and "device-B" not in server.logs()


def test_enforce_policy_ends_the_session_when_the_device_id_changes(enforcing):
    server = enforcing
    seen = len(events(server, "binding_changed"))
    # No device_id in the body: the X-Device-Id header of the login binds the session.
    tokens = sign_in(server)
    assert me(server, tokens).status_code == 200

    r = me(server, tokens, **{"X-Device-Id": "device-B"})
    assert r.status_code == 401
    assert r.json()["code"] == "session_revoked" and r.json()["reason"] == "binding"
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # Ended for everyone: the original device's tokens are refused too.
    assert me(server, tokens).json()["reason"] == "binding"
    assert refresh(server, tokens).json()["code"] == "session_revoked"
    [event] = events(server, "binding_changed")[seen:]
    assert event["changed"] == "device_id" and event["revoked"] is True


def test_enforce_policy_ends_the_session_when_the_device_header_is_dropped(enforcing):
    server = enforcing
    tokens = sign_in(server, device_id="device-A-1234")
    with httpx.Client(base_url=server.base_url, headers={"User-Agent": DEVICE["User-Agent"]}
                      ) as c:
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401 and r.json()["reason"] == "binding"


def test_enforce_policy_checks_the_refresh_path_too(enforcing):
    server = enforcing
    tokens = sign_in(server)
    r = refresh(server, tokens, **{"User-Agent": "python-requests/2.32"})
    assert r.status_code == 401
    assert r.json()["code"] == "session_revoked" and r.json()["reason"] == "binding"
    assert "refresh_token" not in r.json()
    assert me(server, tokens).json()["reason"] == "binding"
    # The same device keeps working after a normal refresh on an unchanged session.
    other = sign_in(server)
    again = refresh(server, other)
    assert again.status_code == 200
    assert me(server, again.json()).status_code == 200


def test_off_policy_ignores_binding_changes(server_factory):
    server = server_factory(binding_policy="off")
    tokens = sign_in(server)
    assert me(server, tokens, **{"X-Device-Id": "elsewhere", "User-Agent": "x"}).status_code == 200
    assert refresh(server, tokens, **{"User-Agent": "y"}).status_code == 200
    assert events(server, "binding_changed") == []


def test_an_oversized_device_header_is_a_bad_request(enforcing):
    server = enforcing
    tokens = sign_in(server)
    r = me(server, tokens, **{"X-Device-Id": "d" * 129})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert me(server, tokens).status_code == 200


def test_a_changed_device_under_report_still_costs_one_redis_call(server_factory,
                                                                  redis_server):
    # The binding decision lives in the verify script, so a phone whose user agent
    # changed (an app update) does not pay a second round trip on every request.
    if TEST_BACKEND == "cluster":
        pytest.skip("LATCHKEY_TEST_BACKEND=cluster: MONITOR watches one node; the round "
                    "trips are counted in the single-Redis run; the other tests of this "
                    "module prove the binding behaviour on the cluster")
    server = server_factory(binding_policy="report", workers=1)
    tokens = sign_in(server, device_id="device-A-1234")
    moved = {"User-Agent": "LatchkeyDemo/2.0 (Android 15)"}
    with device_client(server, **moved) as c:
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        for _ in range(5):
            assert c.get("/v1/me", headers=bearer).status_code == 200
        watcher = redis_server.client()
        seen = [client_commands_during(
            watcher, lambda: c.get("/v1/me", headers=bearer).raise_for_status())
            for _ in range(5)]
    counts = sorted(len(s) for s in seen)
    assert counts[2] == 1, seen
    assert len(events(server, "binding_changed")) == 1


def _session_round_trips(commands: list[str]) -> int:
    """Count the commands a request sent for its session, leaving out the security event.

    A ``binding_changed`` event is counted against its source's budget (one INCRBY and
    EXPIRE pipeline, ``store.SessionStore.count_security_event``) and appended to the
    security stream (one XADD, ``observability.SecurityStreamSink``); that is the event's
    delivery, the same for every security event, not the session decision this test counts.
    """
    return sum(1 for command in commands if command not in _EVENT_DELIVERY)


_EVENT_DELIVERY = frozenset({"XADD", "INCRBY", "EXPIRE"})


@pytest.mark.parametrize("policy", ["report", "enforce"])
def test_a_refresh_from_a_changed_device_costs_one_redis_call_in_every_policy(
        server_factory, redis_server, policy):
    # The refresh script applies the binding policy itself (as the verify script does),
    # so reporting or enforcing a change adds no second round trip after the rotation.
    if TEST_BACKEND == "cluster":
        pytest.skip("LATCHKEY_TEST_BACKEND=cluster: MONITOR watches one node; the round "
                    "trips are counted in the single-Redis run")
    server = server_factory(binding_policy=policy, workers=1)
    moved = {"User-Agent": "LatchkeyDemo/2.0 (Android 15)"}
    # Enforce ends the session on its first changed refresh: one session per count.
    chains = [[sign_in(server, device_id="device-A-1234")["refresh_token"]]
              for _ in range(5 if policy == "enforce" else 1)]
    expected = 200 if policy == "report" else 401
    # Warm up from the original device: the worker's connections and the script in
    # Redis's cache, so the count is the steady state.
    with device_client(server) as same:
        warm = sign_in(server)
        for _ in range(3):
            warm = same.post("/v1/auth/refresh", json={"refresh_token": warm["refresh_token"]}
                             ).raise_for_status().json()
    with device_client(server, **moved) as c:
        if policy == "report":
            # The first changed refresh reports the change; the counted ones have no new
            # change to report, so any extra command would be the binding path's own.
            r = c.post("/v1/auth/refresh", json={"refresh_token": chains[0][-1]})
            chains[0].append(r.raise_for_status().json()["refresh_token"])

        def refresh_once(chain: list[str]) -> None:
            r = c.post("/v1/auth/refresh", json={"refresh_token": chain[-1]})
            assert r.status_code == expected, r.text
            if expected == 200:
                chain.append(r.json()["refresh_token"])
            else:
                assert r.json()["reason"] == "binding"

        watcher = redis_server.client()
        seen = [client_commands_during(watcher, lambda i=i: refresh_once(chains[i % len(chains)]))
                for i in range(5)]
    counts = sorted(_session_round_trips(s) for s in seen)
    assert counts[2] == 1, seen
