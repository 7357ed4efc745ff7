"""Build the resource server's Redis client the way the token server builds its own.

The same options as ``latchkey_server.redis_connection.connection_options``: bounded
connect and command timeouts (a Redis outage fails closed within about a second instead of
hanging a worker), a few jittered retries of a lost connection (a restart or failover costs
milliseconds, not an error), never a retry after a timeout (the script may have run), and a
health check of idle connections. A Redis Cluster is supported as on the token server: the
URL names any one node and the client discovers the rest; every key the check touches
shares its user's hash tag, so it is one script on one node.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

__all__ = ["STORE_DOWN_ERRORS", "ClusterClient", "connect"]

# What a store that cannot answer raises. ``RedisClusterException`` is not a ``RedisError``:
# redis-py's cluster client raises it when no node of the cluster answers at all.
STORE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError, redis.exceptions.RedisClusterException,
)


class ClusterClient(RedisCluster):
    """The cluster client of Latchkey's stores: the token server's and a resource server's.

    Two changes to redis-py's:

    - never re-send after a timeout, like the single-node client: a timed-out command may
      have run, and not every script is idempotent (a revocation re-run reports
      ``ended``). Lost connections, ``CLUSTERDOWN`` and uncovered slots (a failover in
      progress) are still retried, after the client has refreshed its map of the cluster.
    - route ``FCALL`` by its first key, as redis-py routes ``EVALSHA``: redis-py
      special-cases only EVAL/EVALSHA and asks the server (``COMMAND GETKEYS``, one more
      round trip per call) for any other command with movable keys. Every script call
      (``scripts.Script``) carries its user's key.
    """

    # redis-py annotates the base attribute as its own exact 4-tuple, which no subset fits.
    ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]
        e for e in RedisCluster.ERRORS_ALLOW_RETRY if e is not redis.exceptions.TimeoutError)

    def determine_slot(self, *args: Any) -> int | None:
        if len(args) > 3 and str(args[0]).upper() == "FCALL" and int(args[2]) > 0:
            return int(self.keyslot(args[3]))  # type: ignore[no-untyped-call]
        slot: int | None = super().determine_slot(*args)
        return slot


def connect(url: str, *, cluster: bool = False, socket_timeout_seconds: float = 1.0,
            connect_timeout_seconds: float = 1.0, retries: int = 2,
            retry_backoff_cap_seconds: float = 0.2) -> Any:
    """Return a decoding Redis (or Redis Cluster) client for ``url`` with bounded waits."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_seconds,
        "socket_connect_timeout": connect_timeout_seconds,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=retry_backoff_cap_seconds),
                       retries, supported_errors=(redis.exceptions.ConnectionError,)),
    }
    if cluster:
        return ClusterClient(url=url, decode_responses=True, **options)
    return redis.Redis.from_url(url, decode_responses=True, **options)
