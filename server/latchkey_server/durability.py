"""Make a revocation durable before it is answered (L1): WAITAOF where the store has it, WAIT
for replicas, and a report of what the store cannot confirm.

An ending session is one write in Redis's memory. With ``appendfsync everysec`` (the embedded
store, and Redis's default) a host crash can lose the last second of writes, and with
asynchronous replication a failover can promote a replica that never received it: either
way the session a logout just ended would be live again. So after a script ended a session,
the session service asks the store to *confirm* it (``SessionStore.make_durable``) before
the answer goes out:

- ``WAITAOF 1 0`` where the engine has it (Valkey, Redis >= 7.2) and the AOF is on: the
  write is fsynced locally. An external Redis 7.0 has no WAITAOF; there the operator's
  ``appendfsync always`` makes every write fsynced before its reply (docs/OPERATIONS.md).
- ``WAIT n`` when the store's master has replicas (``REVOCATION_REPLICAS``, ``auto`` = 1 if
  one is connected when the node is first seen): the write reached a replica, so a
  failover keeps it.

WAIT and WAITAOF wait for the *calling connection's* last write, and a connection pool (or a
cluster client) gives no guarantee the script ran on the connection that would ask. So the
confirmation writes a short-lived fence key in the user's hash slot (same node) and waits on
that connection, in one pipeline: replication and the AOF are ordered, so once the fence is
fsynced or replicated, every earlier write of that node is too, the revocation included.

What a node supports is detected the first time it is used and kept per node (a promoted
replica is a new node and is detected again).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from .config import Settings

__all__ = ["FENCE_TTL_MS", "DurabilityPlan", "RevocationBarrier", "detect_plan"]

_log = logging.getLogger("latchkey.durability")

# The fence only has to exist until WAIT/WAITAOF answer; it then expires by itself.
FENCE_TTL_MS = 10_000


@dataclass(frozen=True)
class DurabilityPlan:
    """What one Redis node can confirm about a write, and what a revocation waits for."""

    node: str
    fsync: bool  # WAITAOF 1 0: the engine has WAITAOF and its AOF is on
    replicas: int  # WAIT n: replicas that must hold the write
    fsync_always: bool  # appendfsync always: every write is fsynced before its reply

    @property
    def waits(self) -> bool:
        """Return True if a revocation waits for anything on this node."""
        return self.fsync or self.replicas > 0

    @property
    def host_crash_safe(self) -> bool:
        """Return True if an acknowledged revocation survives a crash of this host."""
        return self.fsync or self.fsync_always or self.replicas > 0

    def describe(self) -> str:
        """Return the plan in words, for the start-up log."""
        parts = []
        if self.fsync:
            parts.append("WAITAOF: fsynced locally")
        elif self.fsync_always:
            parts.append("appendfsync always: fsynced locally")
        if self.replicas:
            parts.append(f"WAIT: on {self.replicas} replica(s)")
        return "; ".join(parts) or "nothing: a host crash or failover can undo a revocation"


def detect_plan(node: redis.Redis, settings: Settings, name: str) -> DurabilityPlan:
    """Ask one node what it supports: WAITAOF, AOF, the fsync policy, connected replicas."""
    has_waitaof = _has_waitaof(node)
    aof_on = str(_info(node, "persistence").get("aof_enabled", 0)) == "1"
    try:
        fsync_always = node.config_get("appendfsync").get("appendfsync") == "always"
    except redis.exceptions.ResponseError:  # CONFIG renamed or refused (managed Redis)
        fsync_always = False
    connected = int(_info(node, "replication").get("connected_slaves", 0))
    wanted = settings.revocation_replicas
    replicas = min(1, connected) if wanted == "auto" else int(wanted)
    return DurabilityPlan(name, has_waitaof and aof_on, replicas, aof_on and fsync_always)


def _info(node: redis.Redis, section: str) -> dict[str, object]:
    """Return one INFO section, or nothing where an ACL refuses INFO (then: unknown)."""
    try:
        return dict(node.info(section))
    except redis.exceptions.ResponseError:
        return {}


def _has_waitaof(node: redis.Redis) -> bool:
    """Return True if the node has WAITAOF (Valkey, Redis >= 7.2).

    Asked by running it with nothing to wait for, which answers at once; ``COMMAND INFO``
    would do, but redis-py's parser of its reply fails on the nil an unknown command gets.
    """
    try:
        node.execute_command("WAITAOF", 0, 0, 1)
    except redis.exceptions.ResponseError:  # unknown command (Redis 7.0 and older)
        return False
    return True


class RevocationBarrier:
    """Confirm that a node's writes so far are durable, as its plan allows (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_ms = int(settings.revocation_wait_timeout_seconds * 1000)
        self._plans: dict[str, DurabilityPlan] = {}
        self._lock = threading.Lock()

    def plan(self, client: redis.Redis, fence_key: str) -> DurabilityPlan:
        """Return the plan of the node that holds ``fence_key`` (detected once per node)."""
        name, node = _node_of(client, fence_key)
        with self._lock:
            known = self._plans.get(name)
        if known is not None:
            return known
        plan = detect_plan(node, self._settings, name)
        log = _log.info if plan.host_crash_safe else _log.warning
        log("revocation durability: %s", plan.describe(),
            extra={"event": "revocation_durability", "lk_fsync": plan.fsync,
                   "lk_replicas": plan.replicas, "lk_fsync_always": plan.fsync_always})
        with self._lock:
            self._plans[name] = plan
        return plan

    def confirm(self, client: redis.Redis, fence_key: str) -> bool:
        """Wait until everything written so far on ``fence_key``'s node is durable.

        Returns False if the node did not confirm within ``REVOCATION_WAIT_TIMEOUT`` (the
        write itself stands either way); True if it did or there is nothing to wait for.
        """
        if self._settings.revocation_durability == "off":
            return True
        plan = self.plan(client, fence_key)
        if not plan.waits:
            return True
        name, node = _node_of(client, fence_key)
        pipe = node.pipeline(transaction=False)  # one connection: the fence's own
        pipe.set(fence_key, "1", px=FENCE_TTL_MS)
        if plan.replicas:
            pipe.execute_command("WAIT", plan.replicas, self._timeout_ms)
        if plan.fsync:
            pipe.execute_command("WAITAOF", 1, 0, self._timeout_ms)
        try:
            replies = pipe.execute()[1:]
        except redis.exceptions.ResponseError:
            # MOVED (the slot changed master), READONLY (a demoted master), AOF turned off:
            # this node's plan is stale. Unconfirmed now; the next revocation asks again.
            with self._lock:
                self._plans.pop(name, None)
            return False
        confirmed = True
        if plan.replicas:
            confirmed &= int(replies.pop(0)) >= plan.replicas
        if plan.fsync:
            confirmed &= int(replies.pop(0)[0]) >= 1
        return confirmed


def _node_of(client: redis.Redis, key: str) -> tuple[str, redis.Redis]:
    """Return the name and a single-node client of the master that holds ``key``."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return node.name, client.get_redis_connection(node)
    kwargs = client.connection_pool.connection_kwargs
    name = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return str(name), client
