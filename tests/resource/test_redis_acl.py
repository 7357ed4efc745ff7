"""The Redis ACL of a resource server (``latchkey_resource.acl``) is enough and no more: a
real redis-server with that user, a real Latchkey server beside it (as the default user),
and a Flask backend verifying as the ACL user end to end, events included; every command
outside the ACL is refused to it, inside a script too."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from latchkey_resource.acl import ACL_RULES, acl_setuser_command
from latchkey_resource.flask import LatchkeyResource, current_principal

from tests.resource.conftest import Deployment, app_headers, bearer_to

PASSWORD = "resource-server-password-7d1c"


@pytest.fixture(scope="module")
def acl_deployment(deployment_factory: Callable[..., Deployment]) -> Deployment:
    deployment = deployment_factory()
    # The rules exactly as `python -m latchkey_resource.acl` prints them.
    deployment.redis.client().execute_command(
        *acl_setuser_command("lk-resource", PASSWORD).split())
    return deployment


@pytest.fixture(scope="module")
def as_resource(acl_deployment: Deployment) -> redis.Redis:
    port = acl_deployment.redis.port
    return redis.Redis.from_url(f"redis://lk-resource:{PASSWORD}@127.0.0.1:{port}/0",
                                decode_responses=True)


@pytest.fixture(scope="module")
def backend(acl_deployment: Deployment) -> Flask:
    app = Flask("acl-backend")
    app.config.update(
        LATCHKEY_ISSUER=acl_deployment.issuer,
        LATCHKEY_REDIS_URL=(f"redis://lk-resource:{PASSWORD}@127.0.0.1:"
                            f"{acl_deployment.redis.port}/0"))
    lk = LatchkeyResource(app)

    @app.get("/orders")
    @lk.require_session
    def orders() -> dict[str, str]:
        return {"username": current_principal().username}

    return app


def test_the_printed_command_is_the_rule_set(acl_deployment):
    line = acl_setuser_command("lk-resource")
    assert line.startswith("ACL SETUSER lk-resource on ><password> ")
    assert line.endswith(" ".join(ACL_RULES))


def test_a_backend_verifies_sessions_end_to_end_as_the_acl_user(acl_deployment, backend):
    tokens = acl_deployment.sign_in()
    client = backend.test_client()
    # Three requests: FCALL finds no library (the token server has run no check yet), so
    # the script is sent (EVAL) once, then run by its SHA (EVALSHA); no load is tried.
    for _ in range(3):
        r = client.get("/orders", headers=app_headers(tokens["access_token"]))
        assert r.status_code == 200, r.get_data(as_text=True)
    # A binding change under report: the alert is written to the stream by this user.
    moved = app_headers(tokens["access_token"], **{"User-Agent": "Other/1.0"})
    assert client.get("/orders", headers=moved).status_code == 200
    stream = acl_deployment.redis.client().xrange("lk:security-events")
    assert [f for _, f in stream if f["event"] == "binding_changed"]
    # Ended elsewhere, refused here: the ACL user reads the ended state.
    assert bearer_to(acl_deployment.server, "POST", "/v1/auth/logout-all",
                     tokens["access_token"]).status_code == 204
    r = client.get("/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401 and r.json["code"] == "session_revoked"
    # Nothing was refused to it on the way.
    log = acl_deployment.redis.client().acl_log()
    assert not [e for e in log if e.get("username") == "lk-resource"
                and e.get("object") != "client|setinfo"], log


@pytest.mark.parametrize("command", [
    ("HGETALL", "lk:{u:someone}:user"),  # a whole user record
    ("HKEYS", "lk:{u:someone}:user"),  # its sessions and devices
    ("XADD", "lk:{u:someone}:user", "*", "a", "b"),  # XADD is for the stream only
    ("HGETALL", "lk:{clients}"),  # HGETALL is for the policy only
    ("DEL", "lk:{u:someone}:user"),
    ("HSET", "lk:{policy}", "idle_ms", "999999999"),  # the policy is read-only
    ("GET", "lk:{n:alice}"),  # the username index
    ("HGET", "lk:{clients}", "x"),  # the OAuth client registry
    ("XRANGE", "lk:security-events", "-", "+"),  # reading the alerts
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("FLUSHALL",),
    ("CONFIG", "GET", "*"),
    ("SCRIPT", "LOAD", "return 1"),
    # A library is called by name: one loaded (or replaced) by a resource server would be
    # run by the token server with the token server's rights.
    ("FUNCTION", "LOAD", "REPLACE",
     "#!lua name=x\nredis.register_function('x', function() return 1 end)"),
    ("FUNCTION", "DELETE", "x"),
    ("FUNCTION", "FLUSH"),
    ("SUBSCRIBE", "x"),
])
def test_commands_outside_the_acl_are_refused(as_resource, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_resource.execute_command(*command)


@pytest.mark.parametrize(("script", "key"), [
    ("return redis.call('DEL', KEYS[1])", "lk:{u:someone}:user"),  # a command not granted
    ("return redis.call('GET', KEYS[1])", "lk:{n:alice}"),
    ("return redis.call('HMGET', KEYS[1], 'x')", "lk:{clients}"),  # a key not granted
    ("return redis.call('HSET', KEYS[1], 'idle_ms', '1')", "lk:{policy}"),  # read-only key
])
def test_a_script_cannot_reach_beyond_the_acl_either(as_resource, script, key):
    # A script runs with its caller's rights: EVAL is no way around the ACL.
    with pytest.raises(redis.exceptions.ResponseError,
                       match=r"(?i)can't run this command|no permissions"):
        as_resource.eval(script, 1, key)


def test_a_library_function_cannot_reach_beyond_the_acl_either(acl_deployment, as_resource):
    # FCALL is granted (for the token server's verify_touch library), and a function runs
    # with its caller's rights too: one that deletes a record is refused to this user.
    acl_deployment.redis.client().function_load(
        "#!lua name=lk_acl_probe\n"
        "redis.register_function('lk_acl_probe_del', function(keys) "
        "return redis.call('DEL', keys[1]) end)", replace=True)
    with pytest.raises(redis.exceptions.ResponseError,
                       match=r"(?i)can't run this command|no permissions"):
        as_resource.fcall("lk_acl_probe_del", 1, "lk:{u:someone}:user")
