"""Measure what making a revocation durable costs per logout, through the real store.

Each logout is the store's revocation script (``revoke_session``) and, when durability is
on, the confirmation the session service asks for before answering
(``SessionStore.make_durable``: a fence write, then ``WAITAOF``/``WAIT`` as the store
supports). Both variants run on the same store in the same run, interleaved, so a noisy
machine shifts both alike. Stores:

- ``embedded``: the embedded Valkey 9 (AOF ``everysec``): ``WAITAOF 1 0``, i.e. up to the
  next once-a-second fsync;
- ``redis70-always``: a Redis 7.0 with ``appendfsync always`` (no WAITAOF: every write is
  fsynced before its reply, so both variants pay the fsync);
- ``redis70-replica``: a Redis 7.0 master with one replica on loopback: ``WAIT 1``.

Run: ``.venv/bin/python -m bench.revocation_cost [--logouts 200]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from latchkey_server.config import load_settings
from latchkey_server.embedded import EmbeddedRedis
from latchkey_server.redis_connection import connect
from latchkey_server.store import SessionStore
from latchkey_server.tokens import new_session_id, new_user_id

from bench.harness import print_json, start_redis


@contextmanager
def _embedded(tmp: Path) -> Iterator[str]:
    store = EmbeddedRedis(tmp / "embedded")
    try:
        yield store.start()
    finally:
        store.stop()


@contextmanager
def _always(tmp: Path) -> Iterator[str]:
    proc = start_redis(tmp / "always", None, "--appendonly", "yes", "--appendfsync", "always")
    try:
        yield proc.url
    finally:
        proc.stop()


@contextmanager
def _replicated(tmp: Path) -> Iterator[str]:
    master = start_redis(tmp / "master")
    replica = start_redis(tmp / "replica", None, "--replicaof", "127.0.0.1", str(master.port))
    try:
        while master.client().info("replication")["connected_slaves"] < 1:
            time.sleep(0.05)
        yield master.url
    finally:
        replica.stop()
        master.stop()


STORES: dict[str, Callable[[Path], Any]] = {
    "embedded": _embedded, "redis70-always": _always, "redis70-replica": _replicated,
}


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def measure(name: str, logouts: int) -> dict[str, Any]:
    """Time ``logouts`` revocations with and without the confirmation, interleaved."""
    with tempfile.TemporaryDirectory() as tmp, STORES[name](Path(tmp)) as url:
        settings = load_settings({}, {"instance_path": Path(tmp) / "i", "redis_url": url})
        store = SessionStore(connect(settings, url), settings)
        timings: dict[str, list[float]] = {"durable": [], "in_memory_only": []}
        unconfirmed = 0
        for i in range(logouts * 2):
            user_id, session_id = new_user_id(), new_session_id()
            store.create_user(user_id, f"u-{user_id[:12]}", "$argon2id$" + "x" * 87, "now")
            store.create_session(user_id=user_id, session_id=session_id, refresh_hash="x" * 22,
                                 auth_level="normal", auth_time=int(time.time()),
                                 device_id="d", device_name="", user_agent="ua", ip="")
            durable = i % 2 == 0
            started = time.perf_counter()
            store.revoke_session(user_id, session_id, "logout")
            confirmed = store.make_durable(user_id) if durable else True
            elapsed = time.perf_counter() - started
            unconfirmed += not confirmed
            timings["durable" if durable else "in_memory_only"].append(elapsed)
            time.sleep(0.003)  # logouts arrive spread out, not in one burst
        plan = store._barrier.plan(store.client, "lk:{u:bench}:fence")
        return {"plan": plan.describe(),
                "engine": store.client.info("server").get("valkey_version")
                or store.client.info("server")["redis_version"],
                "unconfirmed_in_time": unconfirmed,
                **{k: _ms(v) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logouts", type=int, default=200)
    parser.add_argument("--stores", default=",".join(STORES))
    args = parser.parse_args()
    print_json({"logouts": args.logouts,
                **{name: measure(name, args.logouts) for name in args.stores.split(",")}})


if __name__ == "__main__":
    main()
