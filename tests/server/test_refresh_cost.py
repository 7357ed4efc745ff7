"""H2 on refresh: a forged refresh token costs the server one HMAC, never a loop (issue 13).

A refresh token's generation is the client's word. Before the token carried a MAC, a
forged token naming a real session with an old generation made the server recompute
every successor up to the session's (100 000 at most: 0.6-0.9 s of CPU per request).
Real server, real Redis; the server's CPU time is read from /proc.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from latchkey_resource.scripts import with_prelude
from latchkey_server.config import load_settings
from latchkey_server.keys import HmacKeys, KeyRing
from latchkey_server.store import user_key
from latchkey_server.tokens import RefreshToken, TokenService

from tests.conftest import RedisProcess, ServerProcess
from tests.server.ops_support import sign_in, wipe_rate_limits

# Set a session's refresh generation (and optionally its current hash) with the store's
# own codec: a session refreshed 100 000 times, without doing it 100 000 times.
_SET = with_prelude("""
local s = decode_session(redis.call('HGET', KEYS[1], session_field(ARGV[1])))
s.g = tonumber(ARGV[2])
if ARGV[3] ~= '' then s.rc = ARGV[3] end
save_session(KEYS[1], ARGV[1], s)
return s.g
""")
FORGED_REQUESTS = 5


def _ids(grant: dict) -> tuple[str, str]:
    claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
    return claims["sub"], claims["sid"]


def _set_record(client, user_id: str, session_id: str, generation: int,
                current_hash: str = "") -> None:
    client.eval(_SET, 1, user_key(user_id), session_id, generation, current_hash)


def _cpu_seconds(root_pid: int) -> float:
    """Return the user+system CPU time of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _forge(user_id: str, session_id: str, generation: int) -> str:
    return RefreshToken.build(user_id, session_id, generation,
                              secrets.token_bytes(32)).value


def _server_tokens(server: ServerProcess) -> TokenService:
    """The server's own token service, built from its instance directory's keys."""
    settings = load_settings({}, {"instance_path": server.instance_path})
    return TokenService(settings, KeyRing(settings), HmacKeys(settings))


def test_a_forged_refresh_token_with_an_old_generation_costs_almost_no_cpu(
        live_server: ServerProcess, redis_server: RedisProcess) -> None:
    _, grant = sign_in(live_server)
    user_id, session_id = _ids(grant)
    _set_record(redis_server.client(), user_id, session_id, 100_000)
    with live_server.client() as http:
        http.get("/readyz")
        before = _cpu_seconds(live_server.proc.pid)
        for _ in range(FORGED_REQUESTS):
            r = http.post("/v1/auth/refresh",
                          json={"refresh_token": _forge(user_id, session_id, 0)})
            assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text
        spent = _cpu_seconds(live_server.proc.pid) - before
        # Each forged request is an HMAC and a refusal: a few ms of CPU at most.
        assert spent < 0.05 * FORGED_REQUESTS, f"{spent:.2f} s of CPU for {FORGED_REQUESTS}"
        # The forgery did not end the session: its real token still rotates.
        assert http.post("/v1/auth/refresh",
                         json={"refresh_token": grant["refresh_token"]}).status_code == 200


@pytest.fixture
def own_store(module_redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    return module_redis_factory()


def test_a_client_out_of_token_budget_is_refused_before_its_forged_token_reaches_the_store(
        own_store: RedisProcess, server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(store_url=own_store.url, invalid_tokens_per_ip=3,
                            invalid_tokens_per_ip_window=60)
    wipe_rate_limits(own_store.client())
    _, grant = sign_in(server)
    user_id, session_id = _ids(grant)
    with server.client() as http:
        for _ in range(3):
            r = http.post("/v1/auth/refresh",
                          json={"refresh_token": _forge(user_id, session_id, 0)})
            assert r.status_code == 401
        monitor_client = own_store.client()
        with monitor_client.monitor() as monitor:
            monitor_client.set("lk-test:start", "1")
            r = http.post("/v1/auth/refresh",
                          json={"refresh_token": _forge(user_id, session_id, 0)})
            monitor_client.set("lk-test:stop", "1")
            commands = []
            for event in monitor.listen():
                if "lk-test:stop" in event["command"]:
                    break
                commands.append(event["command"])
    assert r.status_code == 429
    # Only the budget was read: nothing touched the session's record.
    assert commands and not [c for c in commands if user_key(user_id) in c], commands


def test_a_refresh_token_minted_before_the_mac_rotates_once_into_a_macd_chain(
        live_server: ServerProcess, redis_server: RedisProcess) -> None:
    # Upgrade (SECURITY.md): a session's current token from before tokens carried a MAC
    # has a secret of 256 unstructured bits. It still refreshes, once, into MAC'd tokens.
    _, grant = sign_in(live_server)
    user_id, session_id = _ids(grant)
    tokens = _server_tokens(live_server)
    legacy = RefreshToken.parse(_forge(user_id, session_id, 7))
    assert not tokens.is_authentic(legacy)
    _set_record(redis_server.client(), user_id, session_id, 7, tokens.refresh_hash(legacy))
    with live_server.client() as http:
        r = http.post("/v1/auth/refresh", json={"refresh_token": legacy.value})
        assert r.status_code == 200, r.text
        successor = RefreshToken.parse(r.json()["refresh_token"])
        assert tokens.is_authentic(successor) and successor.generation == 8
        # An older minted token of the chain is reuse, recognised without any walk.
        r = http.post("/v1/auth/refresh", json={"refresh_token": grant["refresh_token"]})
        assert r.json()["code"] == "refresh_token_reused"
