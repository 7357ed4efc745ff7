"""D5: the operator commands (``latchkey-server users|sessions ...``) work against the
server's real store, and every one of them leaves an ``admin_action`` audit event.

The commands run as subprocesses with the same environment as a running server (conftest's
``live_server``), exactly as an operator would run them next to it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import (
    FAST_ARGON2,
    PASSWORD,
    VENV_BIN,
    Api,
    unique_username,
)


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "latchkey-server"), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def audit_events(result: subprocess.CompletedProcess[str]) -> list[dict]:
    docs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [d for d in docs if d.get("event") == "admin_action"]


def test_users_create_makes_an_account_that_signs_in_and_is_audited(live_server, api,
                                                                    redis_server):
    username = unique_username("ops")
    r = cli(live_server.env, "users", "create", "--username", username, "--role", "admin",
            "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    user_id = r.stdout.strip()
    assert len(user_id) == 22
    assert redis_server.client().hget(f"lk:{{u:{user_id}}}:user", "role") == "admin"
    assert api.login(username)["auth_level"] == "normal"

    [event] = audit_events(r)
    assert event["action"] == "users_create" and event["role"] == "admin"
    assert event["actor"] and event["via"] == "cli" and event["user_ref"]
    assert PASSWORD not in r.stdout + r.stderr and user_id not in r.stderr


def test_users_create_refuses_weak_passwords_and_taken_names(live_server, api):
    weak = cli(live_server.env, "users", "create", "--username", unique_username(),
               "--password-stdin", stdin="password123\n")
    assert weak.returncode == 1 and "weak password" in weak.stderr
    taken = api.register()
    again = cli(live_server.env, "users", "create", "--username", taken.upper(),
                "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 1 and "taken" in again.stderr


def test_sessions_list_shows_only_that_users_sessions_and_is_audited(live_server, api):
    alice = api.register()
    alice_sessions = [api.login(alice, device_name=f"phone-{i}") for i in range(2)]
    _, bob_session = api.new_user_session()

    r = cli(live_server.env, "sessions", "list", "--user", alice, "--json")
    assert r.returncode == 0, r.stderr
    listed = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["session_id"] for s in listed] == [t["session_id"] for t in alice_sessions]
    assert [s["device_name"] for s in listed] == ["phone-0", "phone-1"]
    assert bob_session["session_id"] not in r.stdout
    for tokens in alice_sessions:  # the view shows ids, never a token
        assert tokens["access_token"] not in r.stdout + r.stderr
        assert tokens["refresh_token"] not in r.stdout + r.stderr
    [event] = audit_events(r)
    assert event["action"] == "sessions_list" and event["count"] == 2


def test_sessions_revoke_ends_one_session_with_reason_admin(live_server, api):
    username = api.register()
    target, kept = api.login(username), api.login(username)

    r = cli(live_server.env, "sessions", "revoke", "--user", username,
            f"--session={target['session_id']}")
    assert r.returncode == 0, r.stderr
    refused = api.me(target["access_token"])
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_revoked" and refused.json()["reason"] == "admin"
    assert api.refresh(target["refresh_token"]).status_code == 401
    assert api.me(kept["access_token"]).status_code == 200
    [event] = audit_events(r)
    assert event["action"] == "sessions_revoke" and event["outcome"] == "revoked"
    # The audit trail names the session by its pseudonym, never by its id.
    assert event["session_ref"] and target["session_id"] not in r.stderr

    again = cli(live_server.env, "sessions", "revoke", "--user", username,
                f"--session={target['session_id']}")
    assert again.returncode == 1
    assert audit_events(again)[0]["outcome"] == "ended"


def test_sessions_revoke_all_ends_every_session_of_that_user_only(live_server, api):
    username = api.register()
    sessions = [api.login(username) for _ in range(3)]
    _, bystander = api.new_user_session()

    r = cli(live_server.env, "sessions", "revoke", "--user", username, "--all")
    assert r.returncode == 0, r.stderr
    assert "ended 3 session(s)" in r.stdout
    for tokens in sessions:
        assert api.me(tokens["access_token"]).json()["reason"] == "admin"
    assert api.me(bystander["access_token"]).status_code == 200
    [event] = audit_events(r)
    assert event["action"] == "sessions_revoke_all" and event["count"] == 3


def test_commands_about_an_unknown_user_fail_cleanly(live_server):
    for args in (("sessions", "list", "--user", unique_username()),
                 ("sessions", "revoke", "--user", unique_username(), "--all")):
        r = cli(live_server.env, *args)
        assert r.returncode == 1 and "no user named" in r.stderr
        assert "Traceback" not in r.stderr


def test_users_create_works_before_the_first_start_with_the_embedded_redis(server_factory):
    """With no REDIS_URL and no server running, the command starts the embedded Redis for
    its own length; the server started afterwards sees the user, and the commands then
    reach that server's embedded Redis through its socket."""
    # A short path: the embedded Redis's unix socket must fit in the instance directory.
    instance = Path(tempfile.mkdtemp(prefix="lk-", dir="/tmp"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env = {**base, "LATCHKEY_INSTANCE_PATH": str(instance), **FAST_ARGON2}
    username = unique_username("first")
    try:
        r = cli(env, "users", "create", "--username", username, "--password-stdin",
                stdin=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        srv = server_factory(embedded=True, instance_path=instance)
        api = Api(srv.base_url)
        try:
            assert api.login(username)["token_type"] == "Bearer"
            listed = cli(srv.env, "sessions", "list", "--user", username, "--json")
            assert listed.returncode == 0, listed.stderr
            assert len(listed.stdout.splitlines()) == 1
        finally:
            api.close()
            srv.stop()
    finally:
        shutil.rmtree(instance, ignore_errors=True)
