"""Session records live as packed fields of their user's record (store.py), with no TTL
of their own: these tests prove they still go away. Records past retention are pruned by
the scripts that walk a user's sessions and by ``latchkey-server sessions sweep`` for the
users who never come back; ended records are capped per user. Each test has a
redis-server of its own, so a short retention cannot prune anyone else's records.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import redis
from latchkey_server.config import load_settings
from latchkey_server.redis_connection import connect
from latchkey_server.store import (
    ENDED_SESSIONS_KEPT,
    SESSION_FIELD_PREFIX,
    SessionStore,
    session_field,
    user_key,
)
from latchkey_server.tokens import new_session_id, new_user_id

from tests.conftest import (
    PASSWORD,
    VENV_BIN,
    Api,
    RedisProcess,
    start_redis,
    start_server,
    unique_username,
)
from tests.server.store_support import session_state

RETENTION_S = 1
# Short clocks for the end-to-end sweep: sessions go idle after 2 s and their records are
# kept 1 s after that.
SHORT_CLOCKS = {"LATCHKEY_ENDED_SESSION_RETENTION": str(RETENTION_S),
                "LATCHKEY_IDLE_TIMEOUT": "2", "LATCHKEY_ACCESS_TOKEN_TTL": "1",
                "LATCHKEY_ABSOLUTE_TIMEOUT": "60"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = start_redis(tmp_path / "redis")
    yield proc
    proc.stop()


@pytest.fixture
def store(tmp_path: Path, own_redis: RedisProcess) -> SessionStore:
    settings = load_settings({}, {"instance_path": tmp_path / "instance",
                                  "redis_url": own_redis.url,
                                  "ended_session_retention_seconds": RETENTION_S})
    return SessionStore(connect(settings, own_redis.url), settings)


def new_session(store: SessionStore, user_id: str) -> str:
    session_id = new_session_id()
    store.create_session(user_id=user_id, session_id=session_id, refresh_hash="h" * 22,
                         auth_level="normal", auth_time=int(time.time()), device_id="d",
                         device_name="Pixel 8", user_agent="ua", ip="203.0.113.7")
    return session_id


def session_fields_of(client: redis.Redis, user_id: str) -> set[str]:
    fields = (f.decode() for f in client.hkeys(user_key(user_id)))
    return {f for f in fields if f.startswith(SESSION_FIELD_PREFIX)}


def test_an_ended_record_answers_with_its_reason_until_retention_then_is_pruned(
        store: SessionStore, own_redis: RedisProcess) -> None:
    user_id = new_user_id()
    store.create_user(user_id, "ada-" + user_id[:8], "$argon2id$x", "2026-11-22T00:00:00Z")
    ended, live = new_session(store, user_id), new_session(store, user_id)
    assert store.revoke_session(user_id, ended, "logout") == "revoked"
    # Within retention the record still says why (a replayed token learns the reason).
    assert store.revoke_session(user_id, ended, "logout") == "ended"
    assert store.verify_touch(user_id, ended).reason == "logout"
    # What only a live session needs (device, agent, address) left with the session.
    raw = own_redis.client(False)
    ended_record = raw.hget(user_key(user_id), session_field(ended))
    live_record = raw.hget(user_key(user_id), session_field(live))
    assert b"203.0.113.7" in live_record and b"Pixel 8" in live_record
    assert b"203.0.113.7" not in ended_record and b"Pixel 8" not in ended_record
    assert len(ended_record) < len(live_record)
    time.sleep(RETENTION_S + 0.2)
    # Past retention it is as good as gone even before anything prunes it...
    assert store.verify_touch(user_id, ended).state == "unknown"
    assert session_field(ended) in session_fields_of(own_redis.client(False), user_id)
    # ...and the next sign-in of the user prunes it; the live one and the user stay.
    newest = new_session(store, user_id)
    assert session_fields_of(own_redis.client(False), user_id) == {
        session_field(live), session_field(newest)}
    assert store.get_user(user_id)["n"] == "ada-" + user_id[:8]
    assert [s.session_id for s in store.list_sessions(user_id)] == [live, newest]


def test_only_the_most_recent_ended_records_are_kept_per_user(
        tmp_path: Path, own_redis: RedisProcess) -> None:
    settings = load_settings({}, {"instance_path": tmp_path / "instance",
                                  "redis_url": own_redis.url})  # retention: one day
    store = SessionStore(connect(settings, own_redis.url), settings)
    user_id = new_user_id()
    ended = []
    for _ in range(ENDED_SESSIONS_KEPT + 5):
        ended.append(new_session(store, user_id))
        store.end_sessions(user_id, scope="all")
    # Each walk caps the ended records before it ends more, so one over the cap at most...
    assert len(session_fields_of(own_redis.client(False), user_id)) == ENDED_SESSIONS_KEPT + 1
    # ...and a prune (the sweep's) brings it back to the cap.
    assert store.prune_sessions(user_id) == (1, ENDED_SESSIONS_KEPT, 0)
    assert len(session_fields_of(own_redis.client(False), user_id)) == ENDED_SESSIONS_KEPT
    # The oldest are refused as unknown; the most recent still answer with their reason.
    assert store.revoke_session(user_id, ended[0], "admin") == "unknown"
    assert store.revoke_session(user_id, ended[-1], "admin") == "ended"
    assert session_state(own_redis.client(), user_id, ended[-1]) == ("revoked", "remote")


def test_sweep_drops_the_records_of_users_who_never_come_back_and_keeps_live_ones(
        tmp_path: Path, own_redis: RedisProcess) -> None:
    server = start_server(tmp_path / "server", SHORT_CLOCKS, redis_url=own_redis.url)
    try:
        api = Api(server.base_url)
        _, gone = api.new_user_session()     # never used again: goes idle, then past retention
        _, logged_out = api.new_user_session()
        api.http.post("/v1/auth/logout", json={"refresh_token": logged_out["refresh_token"]})
        time.sleep(2 + RETENTION_S + 0.3)
        _, live = api.new_user_session()
        users = {name: jwt.decode(t["access_token"], options={"verify_signature": False})["sub"]
                 for name, t in (("gone", gone), ("logged_out", logged_out), ("live", live))}
        raw = own_redis.client(False)
        assert all(session_fields_of(raw, uid) for uid in users.values())

        result = subprocess.run([str(VENV_BIN / "latchkey-server"), "sessions", "sweep"],
                                env=server.env, capture_output=True, text=True, timeout=60)

        assert result.returncode == 0, result.stderr
        assert "swept 3 user(s): dropped 2 session record(s), 1 kept" in result.stdout
        assert session_fields_of(raw, users["gone"]) == set()
        assert session_fields_of(raw, users["logged_out"]) == set()
        assert session_fields_of(raw, users["live"]) == {session_field(live["session_id"])}
        assert raw.hexists(user_key(users["gone"]), "p")  # the account itself stays
        assert '"action": "sessions_sweep"' in result.stderr
    finally:
        server.stop()


def test_client_supplied_fields_at_their_longest_in_utf8_round_trip(client) -> None:
    """Device name may be 128 characters, the user agent 256: as UTF-8 that is more than a
    one-byte length prefix holds, and a wrapped length would corrupt the record. The device
    id is printable ASCII (the header's rule, binding.py::DEVICE_ID_PATTERN), 128 at most."""
    body = {"username": unique_username("wide"), "password": PASSWORD}
    assert client.post("/v1/auth/register", json=body).status_code == 201
    device_id, device_name, agent = "~" * 128, "\u2713" * 128, "\u00e9" * 256
    r = client.post("/v1/auth/login", json={**body, "device_id": device_id,
                                             "device_name": device_name},
                    headers={"User-Agent": agent})
    assert r.status_code == 200, r.get_json()
    auth = {"User-Agent": agent, "Authorization": f"Bearer {r.get_json()['access_token']}"}
    listed = client.get("/v1/auth/sessions", headers=auth)
    assert listed.status_code == 200, listed.get_json()
    (session,) = listed.get_json()["sessions"]
    assert (session["device_name"], session["user_agent"]) == (device_name, agent)
    assert client.get("/v1/me", headers=auth).status_code == 200
