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

__all__ = ["STORE_DOWN_ERRORS", "connect"]

# What a store that cannot answer raises. ``RedisClusterException`` is not a ``RedisError``:
# redis-py's cluster client raises it when no node of the cluster answers at all.
STORE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError, redis.exceptions.RedisClusterException,
)


class _Cluster(RedisCluster):
    """A cluster client that, like the single-node one, never re-sends after a timeout."""

    ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]
        e for e in RedisCluster.ERRORS_ALLOW_RETRY if e is not redis.exceptions.TimeoutError)


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
        return _Cluster(url=url, decode_responses=True, **options)
    return redis.Redis.from_url(url, decode_responses=True, **options)
