"""Decide which Redis Latchkey talks to and build its clients: the one place that does.

Three callers need a Redis: the app (sessions, ``store.py``; rate limits, ``throttle.py``),
the serving parent that prepares shared state before gunicorn forks (``serving.py``), and
the operator commands (``admin.py``). Each asks ``resolve_redis_url`` which Redis to use,
the configured ``LATCHKEY_REDIS_URL`` or the embedded one in the instance directory, and
builds clients with ``connect`` / ``connection_options``, so timeouts, retries, TLS and
cluster discovery are the same for every client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from latchkey_resource.redis_client import ClusterClient
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from .config import Settings, cluster_seed_nodes
from .embedded import EmbeddedRedis

__all__ = [
    "connect",
    "connection_options",
    "resolve_redis_url",
]

def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """Return the Redis URL to use, and this process's use of the embedded Redis (else None).

    The configured ``redis_url`` wins. Without one, this process joins the embedded Redis of
    the instance directory, which the first user starts (``EmbeddedRedis``: one store process
    per directory, whoever starts the app, an operator command beside a running server
    included); the caller calls ``stop()`` on the returned object when done, and the last
    user out stops the store.
    """
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis(settings.instance_path / "redis")
    return embedded.start(), embedded


def connection_options(settings: Settings) -> dict[str, Any]:
    """Return the redis-py options every Latchkey client uses (sessions and rate limits).

    A lost connection is retried a bounded number of times with jittered exponential
    backoff, so a Redis restart or failover costs a request some milliseconds rather than
    an error, and a real outage fails closed (``StoreUnavailable``, 503) within about
    ``retries * backoff cap`` plus the connect timeouts instead of hanging the worker.
    Timeouts are not retried: the command may have run, and not every script is
    idempotent. ``health_check_interval`` PINGs a connection idle that long before use,
    so stale connections from before an outage are replaced instead of failing a request.
    """
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
        "health_check_interval": 30,
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=settings.redis_retry_backoff_cap_seconds),
            settings.redis_retries,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
    }
    if settings.redis_cluster:
        # The rate limiter's cluster URI (redis+cluster://host:port,...) carries neither
        # TLS nor credentials, so both come from the URL as options, for every client.
        url = urlsplit(settings.redis_url or "")
        if url.scheme == "rediss":
            options["ssl"] = True
        if url.username:
            options["username"] = unquote(url.username)
        if url.password:
            options["password"] = unquote(url.password)
    return options


def connect(settings: Settings, url: str) -> redis.Redis:
    """Return a Redis client for ``url`` with the configured timeouts, retries and checks.

    With ``redis_cluster`` it is a cluster client: ``url`` names one node (credentials and
    TLS come from it) and the client discovers the rest from it or the extra seed nodes.
    Every key a script touches shares its user's hash tag, so the client routes each
    script to the one node that owns the slot; the client has the same interface, so
    nothing above this function knows which kind it talks to.
    """
    if settings.redis_cluster:
        extra_seeds = [ClusterNode(host, port) for host, port in cluster_seed_nodes(settings)[1:]]
        return ClusterClient(url=url, startup_nodes=extra_seeds, decode_responses=True,
                             **connection_options(settings))  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True, **connection_options(settings))
