"""A revocation is durable before it is acknowledged (L1, issue 13).

After a logout (or any revocation) is answered, no crash of the store and no failover may
bring the session back. Each test kills the store the moment the answer arrives: SIGKILL of
the embedded Valkey and of a single Redis, then a restart from their files; SIGKILL of a
master whose replica lags, then the replica promoted. Real redis-server / valkey-server
processes and real latchkey-server processes on loopback throughout.

A SIGKILL of the process alone keeps what it wrote into the kernel's page cache, so the
restart tests pass for any fsync policy; what a host crash would lose is what the server
did not wait for, which the embedded test checks directly (the logout ran ``WAITAOF`` before
its 204). The replica tests are the ones that lose the session on an unconfirmed logout:
the replica's link is held, so an answer that does not wait for it (``WAIT``) comes before
the replica could have the write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import (
    RedisProcess,
    ServerProcess,
    add_cluster_replicas,
    free_port,
    start_redis,
    start_redis_cluster,
)
from tests.server.ops_support import sign_in, wait_for
from tests.server.test_embedded_durability import embedded_redis_pids

# How long a test waits before concluding a logout is waiting for the stopped replica.
LAGGING_REPLICA_SECONDS = 0.6


# A server restarted on the same instance comes up on another free port; the issuer
# (derived from the port on loopback unless set) must stay the same, as it does in a real
# deployment, or the old access tokens would be refused for their issuer.
RESTART_ISSUER = "http://127.0.0.1:8000"

def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_session_is_dead(server: ServerProcess, tokens: dict[str, Any]) -> None:
    """The session's access token and refresh token are both refused, as logged out."""
    with server.client() as http:
        me = http.get("/v1/me", headers=bearer(tokens))
        assert me.status_code == 401, me.text
        assert (me.json()["code"], me.json().get("reason")) == ("session_revoked", "logout")
        again = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert again.status_code == 401, again.text


def command_calls(client: redis.Redis, command: str) -> int:
    """Return how many times the store ran ``command`` (INFO commandstats)."""
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


# -- the embedded store (Valkey: WAITAOF) -----------------------------------------------
def test_an_embedded_logout_is_fsynced_before_204_and_survives_a_sigkill_of_the_store(
        server_factory, tmp_path: Path) -> None:
    instance = tmp_path / "embedded"
    server = server_factory(embedded=True, instance_path=instance, issuer=RESTART_ISSUER)
    _, tokens = sign_in(server)
    store = redis.Redis(unix_socket_path=str(instance / "redis" / "redis.sock"),
                        decode_responses=True)
    fsync_waits = command_calls(store, "waitaof")
    with server.client() as http:
        assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    # The 204 came after the store confirmed the fsync (appendfsync stays everysec).
    assert store.config_get("appendfsync")["appendfsync"] == "everysec"
    assert command_calls(store, "waitaof") > fsync_waits
    (pid,) = embedded_redis_pids(instance)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not embedded_redis_pids(instance), timeout_seconds=10)
    server.stop()

    again = server_factory(embedded=True, instance_path=instance, issuer=RESTART_ISSUER)
    assert_session_is_dead(again, tokens)


# -- a single external Redis 7.0: appendfsync always ------------------------------------
def test_a_single_redis_logout_survives_a_sigkill_right_after_204(server_factory,
                                                                  tmp_path: Path) -> None:
    data, port = tmp_path / "single", free_port()
    args = ("--appendonly", "yes", "--appendfsync", "always")
    store = start_redis(data, port, *args)
    server = server_factory(store_url=store.url)
    try:
        _, tokens = sign_in(server)
        with server.client() as http:
            assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
        store.proc.kill()  # SIGKILL, the moment the 204 is in
        store.proc.wait()
        store = start_redis(data, port, *args)
        wait_for(lambda: _ready(server), timeout_seconds=15)
        assert_session_is_dead(server, tokens)
    finally:
        store.stop()
    assert "revocation durability: appendfsync always: fsynced locally" in server.logs()


def _ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(server.base_url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_store_that_cannot_confirm_a_revocation_is_reported_at_start(
        server_factory, module_redis_factory) -> None:
    store = module_redis_factory()  # no AOF, no replica: what the default test Redis is
    server = server_factory(store_url=store.url)
    _, tokens = sign_in(server)
    with server.client() as http:
        assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    assert "revocation durability: nothing: a host crash or failover can undo" in server.logs()


# -- a master with a replica (WAIT) ----------------------------------------------------
class ReplicationLink:
    """A TCP relay between a replica and its master that can hold the master's stream.

    Stopping the replica process would not make it lag: what the master sent waits in the
    replica's socket buffer and is read after SIGCONT. Held here instead, bytes the master
    sent while the link is held are gone when the link closes, as on a cut network.
    """

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self._master_port = master_port
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        """Cut the link; whatever it holds is never delivered."""
        self._closed = True
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while not self._closed:
                replica, _ = self._listener.accept()
                master = socket.create_connection(("127.0.0.1", self._master_port))
                self._sockets += [replica, master]
                threading.Thread(target=self._pump, args=(master, replica, True),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(replica, master, False),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, holdable: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if holdable:
                    self._flowing.wait()
                if self._closed:
                    return
                sink.sendall(chunk)


class Replicated:
    """A Redis 7.0 master and its replica (through a ``ReplicationLink``), both ours."""

    def __init__(self, tmp_path: Path) -> None:
        self.master = start_redis(tmp_path / "master")
        self.link = ReplicationLink(self.master.port)
        self.replica = start_redis(tmp_path / "replica", None, "--replicaof", "127.0.0.1",
                                   str(self.link.port))
        wait_for(lambda: self.master.client().info("replication")["connected_slaves"] == 1
                 and self.replica.client().info("replication")["master_link_status"] == "up",
                 timeout_seconds=15)

    def stop(self) -> None:
        self.link.close()
        self.replica.stop()
        self.master.stop()

    def promote_replica(self) -> RedisProcess:
        """The master is gone: make the replica the master, as a failover would."""
        self.replica.client().execute_command("REPLICAOF", "NO", "ONE")
        return self.replica


def logout_while_the_replica_lags(server: ServerProcess, tokens: dict[str, Any],
                                  pair: Replicated) -> httpx.Response:
    """Log out with the replica's link held; kill the master the moment the answer is in.

    The link is released only if the logout is still waiting after a while (that is, it
    waits for the replica): so a logout answered without waiting is answered while the
    replica cannot have the write, and the master dies before the replica gets it.
    """
    answer: list[httpx.Response] = []
    pair.link.hold()

    def logout() -> None:
        with server.client() as http:
            answer.append(http.post("/v1/auth/logout", headers=bearer(tokens)))

    thread = threading.Thread(target=logout)
    thread.start()
    thread.join(LAGGING_REPLICA_SECONDS)
    if thread.is_alive():
        pair.link.release()
        thread.join(10)
    pair.master.proc.kill()  # SIGKILL right after the answer
    pair.master.proc.wait()
    pair.link.close()  # what the replica did not get by now, it never gets
    return answer[0]


def test_a_logout_is_on_a_replica_before_204_so_a_failover_keeps_it(server_factory,
                                                                    tmp_path: Path) -> None:
    pair = Replicated(tmp_path)
    try:
        server = server_factory(store_url=pair.master.url, issuer=RESTART_ISSUER)
        _, tokens = sign_in(server)
        answer = logout_while_the_replica_lags(server, tokens, pair)
        assert answer.status_code == 204, answer.text
        promoted = pair.promote_replica()
        after = server_factory(store_url=promoted.url, instance_path=server.instance_path,
                               issuer=RESTART_ISSUER)
        assert_session_is_dead(after, tokens)
        assert "revocation durability: WAIT: on 1 replica(s)" in server.logs()
    finally:
        pair.stop()


@pytest.mark.parametrize(("policy", "status"), [("fail", 503), ("report", 204)])
def test_a_revocation_no_replica_confirms_in_time_follows_the_policy(
        server_factory, tmp_path: Path, policy: str, status: int) -> None:
    pair = Replicated(tmp_path)
    try:
        server = server_factory(store_url=pair.master.url, revocation_unconfirmed=policy,
                                revocation_wait_timeout=0.2)
        _, tokens = sign_in(server)
        pair.link.hold()
        started = time.monotonic()
        with server.client() as http:
            answer = http.post("/v1/auth/logout", headers=bearer(tokens))
            waited = time.monotonic() - started
            assert answer.status_code == status, answer.text
            # Ended either way (in the master's memory), and a retry says so once the
            # replica is back and confirms it.
            me = http.get("/v1/me", headers=bearer(tokens))
            assert me.json()["code"] == "session_revoked"
            pair.link.release()
            retry = http.post("/v1/auth/logout", headers=bearer(tokens))
            assert retry.status_code == 204
        assert waited >= 0.2
        assert '"revocation_unconfirmed"' in server.logs()
    finally:
        pair.stop()


# -- a Redis Cluster with a replica per master -----------------------------------------
def test_a_cluster_logout_survives_its_master_killed_and_replaced_by_the_replica(
        server_factory, tmp_path: Path) -> None:
    # The cluster's replication link cannot be held here (the replica dials the address the
    # cluster announces), so this proves the path, not the race: the wait runs on the
    # master of the user's slot (WAIT 1), and after that master is killed the moment the
    # 204 is in and its replica takes over, the session stays dead.
    cluster = start_redis_cluster(tmp_path / "cluster")
    replicas = add_cluster_replicas(cluster, tmp_path / "cluster")
    try:
        server = server_factory(store_url=cluster.url, issuer=RESTART_ISSUER)
        _, tokens = sign_in(server)
        with server.client() as http:
            user_id = http.get("/v1/me", headers=bearer(tokens)).json()["user_id"]
        from latchkey_server.store import user_key

        slot = cluster.client().keyslot(user_key(user_id))
        index = next(i for i, node in enumerate(cluster.nodes)
                     if _owns(node, slot))
        master, replica = cluster.nodes[index], replicas[index]
        with server.client() as http:
            assert http.post("/v1/auth/logout", headers=bearer(tokens)).status_code == 204
        master.proc.kill()  # SIGKILL, the moment the 204 is in
        master.proc.wait()
        replica.client().execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        assert wait_for(lambda: _owns(replica, slot), timeout_seconds=20)
        assert wait_for(lambda: "cluster_state:ok" in
                        replica.client().execute_command("CLUSTER", "INFO"),
                        timeout_seconds=30)
        after = server_factory(store_url=cluster.url, instance_path=server.instance_path,
                               issuer=RESTART_ISSUER,
                               redis_cluster_nodes=",".join(
                                   f"127.0.0.1:{n.port}" for n in [*cluster.nodes, *replicas]
                                   if n is not master))
        assert_session_is_dead(after, tokens)
        assert "revocation durability: WAIT: on 1 replica(s)" in server.logs()
    finally:
        for node in replicas:
            node.stop()
        cluster.stop()


def _owns(node: RedisProcess, slot: int) -> bool:
    """Return True if ``node`` is, in its own view, the master serving ``slot``."""
    try:
        for first, last, owner, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(owner[1]) == node.port
    except redis.exceptions.RedisError:
        return False
    return False


def test_a_node_whose_plan_went_stale_is_unconfirmed_once_then_asked_again(
        tmp_path: Path) -> None:
    from latchkey_server.config import load_settings
    from latchkey_server.embedded import EmbeddedRedis
    from latchkey_server.redis_connection import connect
    from latchkey_server.store import SessionStore

    embedded = EmbeddedRedis(tmp_path / "store")
    url = embedded.start()
    try:
        settings = load_settings({}, {"instance_path": tmp_path / "i", "redis_url": url})
        store = SessionStore(connect(settings, url), settings)
        assert store.make_durable("u1")  # WAITAOF: the AOF is on
        # The operator turns the AOF off: WAITAOF now refuses, the plan is stale.
        store.client.config_set("appendonly", "no")
        assert not store.make_durable("u1")
        # Asked again: nothing left to wait for locally (the new plan is logged).
        assert store.make_durable("u1")
    finally:
        embedded.stop()
