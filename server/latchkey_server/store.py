"""Own every Redis key and every Lua script of Latchkey; nothing else knows a key.

Key layout (``{...}`` is the Redis Cluster hash tag)::

    lk:{u:<user_id>}:user          hash   the user (n username, p password hash,
                                          c created, role) and every session of the
                                          user, one field ``s:<session id>`` each
    lk:{n:<username lowercased>}   string username -> user id (uniqueness without case)

A user's record and all of their sessions are one key in one cluster slot, so each
script (create, verify-and-touch, rotate, revoke, and the multi-session operations built
on them) is atomic and a single round trip, on one Redis or on a cluster. Only the
username index lives elsewhere, and only registration and login read it.

One field per session instead of one key per session is what keeps a live session at
193 bytes of Redis memory with ``RECOMMENDED_REDIS_CONFIG`` (305-337 on Redis defaults,
620 as a key of its own; docs/PERFORMANCE.md): a key costs its keyspace and expiry
entries, and a separate index of the user's sessions cost a second key. The value is
packed with Redis's ``struct`` library by the scripts (``lua/_prelude.lua``), big-endian::

    B  state (1 live, 2 revoked, 3 expired)      B  auth level (0 normal, 1 elevated)
    I4 refresh generation                        I6 created (ms, Redis server time)
    I6 last seen (ms)                            I6 absolute expiry (ms)
    I6 while live: end of the previous refresh token's grace window (ms);
       once ended: when it ended (ms)
    I4 auth time (s)
    then strings, each after its length (B: up to 255 bytes, H: up to 65535):
    B current refresh hash, B previous refresh hash, H device id, H device name,
    H user agent, H client address, B binding fingerprint last reported (D3, so one
    change is reported once), B reason it ended

Only the scripts pack and unpack it; Python sees what the scripts return. Ended sessions
are marked, not deleted, and kept for a retention period so that a replay of one of their
tokens is recognised and answered with the reason. Fields have no TTL of their own (Redis
7.0), so every script that walks a user's sessions drops records past retention and keeps
at most ``ENDED_SESSIONS_KEPT`` ended ones; ``latchkey-server sessions sweep`` does the
same for users who never come back.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from .config import Settings, cluster_seed_nodes
from .errors import (
    InvalidCredentials,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    UsernameTaken,
)

__all__ = [
    "RotationResult",
    "SessionCheck",
    "SessionInfo",
    "SessionStore",
    "connect",
]

P = ParamSpec("P")
R = TypeVar("R")

KEY_PREFIX = "lk"
SCRIPT_NAMES = ("create_session", "verify_touch", "rotate_refresh", "revoke_session",
                "end_sessions", "list_sessions", "note_binding_change", "prune_sessions")
# The fields of a user's record that are the user (the rest are sessions).
USER_FIELDS = ("n", "p", "c", "role")
# Ended session records kept per user beyond which the oldest go before retention runs
# out: a user who signs in and out all day must not grow one record without bound. A
# replay of a token of a dropped record is refused as unknown instead of with its reason.
ENDED_SESSIONS_KEPT = 40
# A session's field in its user's record (lua/_prelude.lua builds the same name).
SESSION_FIELD_PREFIX = "s:"
# Redis settings Latchkey's records are sized for; the embedded store starts with them,
# and docs/OPERATIONS.md asks the same of an external Redis. A hash stays a compact
# listpack only while every value is at most this long (Redis's default, 64 bytes, is
# below a password hash or one session record), which roughly halves the memory of a
# user record and of each session in it (docs/PERFORMANCE.md). Lookups in a listpack are
# linear, which is cheap at this size: with the default limits a record holds at most
# 4 + 10 + 41 fields, so it also stays within ``hash-max-listpack-entries`` (128 entries,
# two per field). The ziplist name is the one Redis 6.2 (the embedded binary) knows and
# Redis 7 still accepts.
RECOMMENDED_REDIS_CONFIG = {"hash-max-ziplist-value": "1024"}


def recommended_redis_args() -> list[str]:
    """Return ``RECOMMENDED_REDIS_CONFIG`` as redis-server command-line arguments."""
    return [arg for name, value in RECOMMENDED_REDIS_CONFIG.items()
            for arg in (f"--{name}", value)]


# Flask-Limiter's counters (throttle.py) live under this prefix; limits adds its own
# ``{...}`` hash tag per counter, so each one sits in one slot.
RATE_LIMIT_KEY_PREFIX = f"{KEY_PREFIX}:rl"
# The stream of security events (D4) a security team consumes; capped with MAXLEN ~.
SECURITY_STREAM_KEY = f"{KEY_PREFIX}:security-events"


def _user_tag(user_id: str) -> str:
    return f"{KEY_PREFIX}:{{u:{user_id}}}"


def user_key(user_id: str) -> str:
    """Return the key of a user's record."""
    return f"{_user_tag(user_id)}:user"


def session_field(session_id: str) -> str:
    """Return the field of a user's record that holds one session (packed by scripts)."""
    return SESSION_FIELD_PREFIX + session_id


def _user_id_of(key: str) -> str:
    """Return the user id in a user record's key (the inverse of ``user_key``)."""
    head, tail = user_key("\0").split("\0")
    return key[len(head):-len(tail)]


def username_key(username: str) -> str:
    """Return the key of the case-insensitive username index entry."""
    return f"{KEY_PREFIX}:{{n:{username.lower()}}}"


def with_prelude(body: str) -> str:
    """Return a script body with the shared helpers (session codec, clocks) in front."""
    lua = resources.files("latchkey_server") / "lua"
    return (lua / "_prelude.lua").read_text() + "\n" + body


def _load_script(name: str) -> str:
    lua = resources.files("latchkey_server") / "lua"
    return with_prelude((lua / f"{name}.lua").read_text())


class _Script:
    """One Lua script, run by its SHA1; the body is sent only when the node lacks it.

    redis-py's ``Script`` answers NOSCRIPT (a restarted node, or a replica just promoted:
    script caches are neither persisted nor replicated) with SCRIPT LOAD, which a cluster
    client sends to every master, so one master down made a healthy one fail too. EVAL
    runs the body on the node that owns the keys and caches it there: the same slot, one
    round trip, on one Redis or on a cluster.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self._client.eval(self._source, len(keys), *keys, *args)


def _store_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost or timed-out Redis connection into ``StoreUnavailable`` (fail closed)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
                redis.exceptions.TryAgainError) as exc:
            raise StoreUnavailable() from exc

    return wrapper


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


class _Cluster(RedisCluster):
    """A cluster client that, like the single-node one, never re-sends after a timeout.

    redis-py's cluster client retries timeouts too; but a timed-out command may have run,
    and not every script is idempotent (a revocation re-run reports ``ended``). Lost
    connections, ``CLUSTERDOWN`` and uncovered slots (a failover in progress) are still
    retried, after the client has refreshed its map of the cluster.
    """

    ERRORS_ALLOW_RETRY = tuple(e for e in RedisCluster.ERRORS_ALLOW_RETRY
                               if e is not redis.exceptions.TimeoutError)


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
        return _Cluster(url=url, startup_nodes=extra_seeds, decode_responses=True,
                        **connection_options(settings))  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True, **connection_options(settings))


@dataclass(frozen=True)
class SessionCheck:
    """What verify-and-touch learned about a session."""

    state: str  # live | revoked | expired | unknown
    reason: str = ""
    auth_level: str = ""
    auth_time: int = 0
    device_id: str = ""
    user_agent: str = ""
    username: str = ""
    just_ended: bool = False
    # Which bound fields (device_id, user_agent) this request changed: to report now
    # (live session, first time seen) or why enforcement just ended it.
    binding_changed: str = ""


@dataclass(frozen=True)
class SessionInfo:
    """One live session as the session list shows it (times in ms, Redis server time)."""

    session_id: str
    created_ms: int
    last_seen_ms: int
    expires_ms: int  # the earlier of the idle and the absolute limit, if unused till then
    auth_level: str
    device_name: str
    user_agent: str
    ip: str


@dataclass(frozen=True)
class RotationResult:
    """The outcome of presenting a refresh token to the rotate script."""

    outcome: str  # rotated | replayed | ended | reused | check | unknown
    absolute_left_ms: int = 0
    auth_level: str = ""
    auth_time: int = 0
    device_id: str = ""
    user_agent: str = ""
    state: str = ""
    reason: str = ""
    current_generation: int = 0
    current_hash: str = ""
    previous_hash: str = ""
    just_ended: bool = False


class SessionStore:
    """All session and user state in Redis, behind intention-revealing methods."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self._settings = settings
        self._retention_ms = settings.ended_session_retention_seconds * 1000
        self._idle_ms = settings.idle_timeout_seconds * 1000
        self._scripts = {name: _Script(client, _load_script(name)) for name in SCRIPT_NAMES}

    # -- health ---------------------------------------------------------------------
    @_store_call
    def ping(self) -> bool:
        """Return True if Redis answers."""
        return bool(self.client.ping())

    # -- security events (D4) -------------------------------------------------------
    @_store_call
    def append_security_event(self, fields: dict[str, str], max_length: int) -> str:
        """Add one event to the security stream, trimmed to about ``max_length`` entries.

        ``MAXLEN ~`` lets Redis trim whole radix-tree nodes only, which keeps XADD O(1);
        the stream may hold slightly more than ``max_length`` entries.
        """
        return self.client.xadd(SECURITY_STREAM_KEY, fields, maxlen=max_length,
                                approximate=True)

    # -- users ----------------------------------------------------------------------
    @_store_call
    def create_user(self, user_id: str, username: str, password_hash: str,
                    created_at: str, role: str = "user") -> None:
        """Create a user; raise ``UsernameTaken`` if the name exists in any case."""
        if not self.client.set(username_key(username), user_id, nx=True):
            raise UsernameTaken()
        self.client.hset(user_key(user_id), mapping={
            "n": username, "p": password_hash, "c": created_at, "role": role,
        })

    @_store_call
    def user_id_for(self, username: str) -> str | None:
        """Return the user id registered under ``username`` (any case), if any."""
        return self.client.get(username_key(username))

    @_store_call
    def get_user(self, user_id: str) -> dict[str, str]:
        """Return a user's record (empty if unknown), without their sessions."""
        values = self.client.hmget(user_key(user_id), list(USER_FIELDS))
        return {name: value for name, value in zip(USER_FIELDS, values, strict=True)
                if value is not None}

    @_store_call
    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash (after a rehash or a password change)."""
        self.client.hset(user_key(user_id), "p", password_hash)

    # -- sessions -------------------------------------------------------------------
    @_store_call
    def create_session(
        self,
        *,
        user_id: str,
        session_id: str,
        refresh_hash: str,
        auth_level: str,
        auth_time: int,
        device_id: str,
        device_name: str,
        user_agent: str,
        ip: str,
        replaces: str = "",
        replaced_reason: str = "",
        end_others_reason: str = "",
        new_password_hash: str = "",
        verified_password_hash: str = "",
    ) -> tuple[int, list[tuple[str, str]]]:
        """Create a session under the concurrency policy; return (created ms, ended).

        With ``new_password_hash`` the password changes in the same atomic step, provided
        the stored hash is still ``verified_password_hash``; else ``InvalidCredentials``.
        With ``replaces`` and no ``device_name``, the new session keeps the replaced one's;
        if the session to replace is no longer live (a remote sign-out or a timeout raced
        the caller's request), nothing changes and ``SessionRevoked`` or
        ``SessionExpired`` says why.
        """
        s = self._settings
        created, ended = self._scripts["create_session"](
            keys=[user_key(user_id)],
            args=[
                session_id, s.absolute_timeout_seconds * 1000, self._idle_ms,
                self._retention_ms, s.max_sessions_per_user, "1" if s.single_session else "0",
                ENDED_SESSIONS_KEPT, refresh_hash, auth_level, auth_time,
                device_id, device_name, user_agent, ip,
                replaces, replaced_reason, end_others_reason,
                new_password_hash, verified_password_hash,
            ],
        )
        if int(created) == -1:
            raise InvalidCredentials("The password was changed meanwhile")
        if int(created) == -2:
            state, reason = ended
            if state == "expired":
                raise SessionExpired(reason)
            raise SessionRevoked(reason or None)
        pairs = [(ended[i], ended[i + 1]) for i in range(0, len(ended), 2)]
        return int(created), pairs

    @_store_call
    def verify_and_touch(self, user_id: str, session_id: str, *, device_id: str = "",
                         user_agent: str = "", binding_fingerprint: str = "") -> SessionCheck:
        """Check a session is live on server time, apply the binding policy to this
        request's device id and user agent, and mark the session used: one round trip."""
        s = self._settings
        reply = self._scripts["verify_touch"](
            keys=[user_key(user_id)],
            args=[session_id, self._idle_ms, self._retention_ms,
                  s.binding_policy, device_id, user_agent, binding_fingerprint],
        )
        if reply[0] == "live":
            return SessionCheck("live", "", reply[1], int(reply[2]), reply[3], reply[4],
                                username=reply[6], binding_changed=reply[7])
        return SessionCheck(reply[0], reply[1] if len(reply) > 1 else "",
                            just_ended=len(reply) > 2,
                            binding_changed=reply[3] if len(reply) > 3 else "")

    @_store_call
    def rotate_refresh(self, *, user_id: str, session_id: str, presented_hash: str,
                       successor_hash: str, presented_generation: int) -> RotationResult:
        """Present a refresh token: rotate, replay inside grace, or detect reuse."""
        s = self._settings
        reply: list[Any] = self._scripts["rotate_refresh"](
            keys=[user_key(user_id)],
            args=[session_id, presented_hash, successor_hash, presented_generation,
                  self._idle_ms, s.refresh_reuse_grace_seconds * 1000,
                  self._retention_ms],
        )
        outcome = reply[0]
        if outcome in ("rotated", "replayed"):
            return RotationResult(outcome, int(reply[1]), reply[2], int(reply[3]),
                                  reply[4], reply[5])
        if outcome == "ended":
            return RotationResult(outcome, state=reply[1], reason=reply[2],
                                  just_ended=len(reply) > 3)
        if outcome == "check":
            return RotationResult(outcome, current_generation=int(reply[1]),
                                  current_hash=reply[2], previous_hash=reply[3],
                                  state=reply[4], reason=reply[5])
        return RotationResult(outcome)

    @_store_call
    def revoke_session(self, user_id: str, session_id: str, reason: str,
                       refresh_hash: str = "") -> str:
        """End one session with a reason; return 'revoked', 'ended' or 'unknown'."""
        return self._scripts["revoke_session"](
            keys=[user_key(user_id)],
            args=[session_id, reason, self._retention_ms, refresh_hash,
                  self._idle_ms],
        )

    @_store_call
    def end_sessions(self, user_id: str, *, current_session_id: str = "", scope: str = "all",
                     current_reason: str = "logout", others_reason: str = "remote",
                     ) -> list[tuple[str, str]]:
        """End all of a user's sessions, or all but the caller's, atomically (L1).

        Returns (session id, reason) for each session ended; ``idle``/``absolute`` reasons
        mean it had already expired and was marked so.
        """
        ended = self._scripts["end_sessions"](
            keys=[user_key(user_id)],
            args=[ENDED_SESSIONS_KEPT, current_session_id, scope, current_reason,
                  others_reason, self._idle_ms,
                  self._retention_ms],
        )
        return [(ended[i], ended[i + 1]) for i in range(0, len(ended), 2)]

    @_store_call
    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """Return a user's live sessions, oldest first, judged on Redis server time."""
        reply = self._scripts["list_sessions"](
            keys=[user_key(user_id)], args=[self._idle_ms, self._retention_ms],
        )
        out = []
        for sid, created, last, absolute, level, name, agent, ip in reply[1:]:
            out.append(SessionInfo(sid, int(created), int(last),
                                   min(int(absolute), int(last) + self._idle_ms),
                                   level, name, agent, ip))
        return out

    @_store_call
    def note_binding_change(self, user_id: str, session_id: str, fingerprint: str) -> bool:
        """Record a binding change (D3); True if it is new for this session (report it)."""
        return bool(self._scripts["note_binding_change"](
            keys=[user_key(user_id)], args=[session_id, fingerprint],
        ))

    # -- sweeping -------------------------------------------------------------------
    @_store_call
    def prune_sessions(self, user_id: str) -> tuple[int, int]:
        """Drop one user's session records past retention; return (dropped, left)."""
        dropped, left = self._scripts["prune_sessions"](
            keys=[user_key(user_id)],
            args=[self._idle_ms, self._retention_ms,
                  ENDED_SESSIONS_KEPT],
        )
        return int(dropped), int(left)

    @_store_call
    def sweep_sessions(self, batch: int = 500) -> tuple[int, int, int]:
        """Prune every user's session records; return (users, records dropped, left).

        Scripts prune a user's records whenever they walk that user's sessions, but a
        user who never signs in again is never walked: this visits them all (SCAN, on
        every master of a cluster), one short script per user, so it can run while the
        server serves. Run it daily (``latchkey-server sessions sweep``).
        """
        users = dropped = left = 0
        for key in self.client.scan_iter(match=user_key("*"), count=batch):
            gone, kept = self.prune_sessions(_user_id_of(key))
            users, dropped, left = users + 1, dropped + gone, left + kept
        return users, dropped, left
