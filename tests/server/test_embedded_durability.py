"""The embedded store is durable: a restart on the same instance directory loses no session,
and stopping the server (SIGTERM, as a process manager does) leaves no store process behind.
"""

from __future__ import annotations

from pathlib import Path

import redis
from latchkey_server.embedded import redis_server_binary

from tests.server.ops_support import processes_mentioning, sign_in


def embedded_redis_pids(instance: Path) -> list[int]:
    """Return the pids of the embedded store processes (valkey-server) of ``instance``."""
    binary = redis_server_binary()
    return [pid for pid in processes_mentioning(str(instance / "redis"))
            if binary in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]


def aof_bytes(instance: Path) -> int:
    """Return the size of the embedded store's append-only files (Valkey: a directory)."""
    return sum(f.stat().st_size for f in (instance / "redis").rglob("latchkey.aof*"))


def test_sessions_survive_a_restart_of_server_and_embedded_store(server_factory,
                                                                 tmp_path: Path) -> None:
    instance = tmp_path / "durable"
    # The restart comes up on another free port; the issuer (derived from the port on
    # loopback) must stay the same, as it does for a server restarted on its own port.
    issuer = "http://127.0.0.1:8000"
    first = server_factory(embedded=True, instance_path=instance, workers=2, issuer=issuer)
    assert len(embedded_redis_pids(instance)) == 1
    _, tokens = sign_in(first)
    with first.client() as http:
        rotated = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
    current = rotated.json()

    first.stop()  # SIGTERM
    assert first.proc.returncode == 0
    assert embedded_redis_pids(instance) == [], "the store outlived the server"
    assert aof_bytes(instance) > 0

    second = server_factory(embedded=True, instance_path=instance, workers=2, issuer=issuer)
    with second.client() as http:
        bearer = {"Authorization": f"Bearer {current['access_token']}"}
        me = http.get("/v1/me", headers=bearer)
        assert me.status_code == 200, me.text
        assert me.json()["session_id"] == tokens["session_id"]
        again = http.post("/v1/auth/refresh", json={"refresh_token": current["refresh_token"]})
        assert again.status_code == 200
        assert again.json()["session_id"] == tokens["session_id"]
        # The rotation before the restart is remembered too: the first token is spent.
        reused = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert reused.status_code == 401


def test_embedded_store_is_private_and_append_only(server_factory, tmp_path: Path) -> None:
    instance = tmp_path / "private"
    server_factory(embedded=True, instance_path=instance)
    socket_path = instance / "redis" / "redis.sock"
    client = redis.Redis(unix_socket_path=str(socket_path), decode_responses=True)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("port")["port"] == "0"  # no TCP listener
    assert oct((instance / "redis").stat().st_mode & 0o777) == "0o700"
