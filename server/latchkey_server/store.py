"""Own every Redis key and every Lua script of Latchkey; nothing else knows a key.

Key layout (``{...}`` is the Redis Cluster hash tag)::

    lk:{u:<user_id>}:user          hash   the user (n username, p password hash,
                                          c created, role, g credential generation:
                                          moved on by a password change, logout-all
                                          and revoke-all), the devices that signed
                                          in (``d:<device ref>``: last sign-in, ms;
                                          D2 known devices) and every session of the
                                          user, one field ``s:<session id>`` each
    lk:{n:<username lowercased>}   string username -> user id (uniqueness without case)
    lk:{clients}                   hash   the OAuth client registry: one field per
                                          client id, a JSON value (name, type, keyed
                                          hash of the secret, created)
    lk:{u:<user_id>}:fence         string written (10 s TTL) to confirm a revocation is
                                          durable on the user's node (durability.py)
    lk:{u:<user_id>}:dpop-jti      zset   the DPoP proof ``jti``s the user's requests
                                          carried, scored with when each may be
                                          forgotten (RFC 9449 section 11.1: single use);
                                          in the user's slot, so the script a request
                                          already runs checks it: no extra round trip
    lk:{live-sessions}             hash   the live sessions the last sweep counted
                                          (n) and when (t, ms, Redis time)
    lk:{policy}                    hash   the session policy resource servers apply
                                          (idle, retention, binding, issuer...),
                                          written at start (latchkey_resource.policy)

A user's record and all of their sessions are one key in one cluster slot, so each
script (create, verify-and-touch, rotate, revoke, and the multi-session operations built
on them) is atomic and a single round trip, on one Redis or on a cluster. Only the
username index lives elsewhere, and only registration and login read it. The client
registry is one small hash in one slot: registrations are rare, ``clients list`` is one
HGETALL, and the OAuth endpoints read one field per request (so a client created while
the server runs works at once, in every worker).

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
    change is reported once), B reason it ended, B the OAuth client it was issued to
    ('' for the built-in client of ``/v1`` logins, so that costs one byte; records
    written before the field existed decode as the built-in client's), B the RFC 7638
    thumbprint of the DPoP key the session is bound to ('' when unbound; absent in
    records written before DPoP, which decode as unbound)

Only the scripts pack and unpack it; Python sees what the scripts return. Ended sessions
are marked, not deleted, and kept for a retention period so that a replay of one of their
tokens is recognised and answered with the reason. Fields have no TTL of their own (Redis
7.0), so every script that walks a user's sessions drops records past retention and keeps
at most ``ENDED_SESSIONS_KEPT`` ended ones; ``latchkey-server sessions sweep`` does the
same for users who never come back.

Each script is an attribute of ``SessionStore`` named like the method that runs it
(``self._verify_touch`` for ``verify_touch``), and each reply is decoded into a named type
(``SessionCheck``, ``RotationResult``, ``CreatedSession``...) whose outcome is an enum, so
no caller reads a reply by position. Arguments are positional ARGV where there are few
(each script's header lists them); ``create_session`` takes one JSON object instead
(``_encode_record``, decoded with Redis's ``cjson``), whose fields the script's header
documents.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

import redis
from latchkey_resource import scripts
from latchkey_resource.event_budget import count_in_store
from latchkey_resource.policy import SessionPolicy, publish_policy
from latchkey_resource.session_check import (
    EXPIRY_REASONS,
    SessionCheck,
    SessionState,
    verify_touch_call,
)
from latchkey_resource.store_keys import (
    KEY_PREFIX,
    SECURITY_STREAM_KEY,
    SESSION_FIELD_PREFIX,
    dpop_jti_key,
    session_field,
    user_key,
    user_tag,
)

from .config import Settings
from .durability import RevocationBarrier
from .errors import (
    InvalidCredentials,
    InvalidDPoPProof,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    UsernameTaken,
)

__all__ = [
    "KEY_PREFIX",
    "PROOF_REFUSED",
    "SECURITY_STREAM_KEY",
    "SESSION_FIELD_PREFIX",
    "ClientRecord",
    "CreatedSession",
    "EndedSession",
    "LiveSessions",
    "Pruned",
    "Revocation",
    "Rotation",
    "RotationResult",
    "SessionCheck",
    "SessionInfo",
    "SessionState",
    "SessionStore",
    "Swept",
    "session_field",
    "user_key",
]

_log = logging.getLogger("latchkey.store")

P = ParamSpec("P")
R = TypeVar("R")

# KEY_PREFIX, the user record's key and its session fields, and the alert stream are named
# in latchkey_resource.store_keys, which resource servers share.
# The fields of a user's record that are the user (the rest are sessions).
USER_FIELDS = ("n", "p", "c", "role", "g")
# Ended session records kept per user beyond which the oldest go before retention runs
# out: a user who signs in and out all day must not grow one record without bound. A
# replay of a token of a dropped record is refused as unknown instead of with its reason.
ENDED_SESSIONS_KEPT = 40
# A known device's field (create_session.lua writes it at each successful login).
KNOWN_DEVICE_PREFIX = "d:"
# Redis settings Latchkey's records are sized for; the embedded store starts with them,
# and docs/OPERATIONS.md asks the same of an external Redis. A hash stays a compact
# listpack only while every value is at most this long (Redis's default, 64 bytes, is
# below a password hash or one session record), which roughly halves the memory of a
# user record and of each session in it (docs/PERFORMANCE.md). Lookups in a listpack are
# linear, which is cheap at this size: with the default limits a record holds at most
# 5 + 10 + 41 fields and one per known device, so it stays within
# ``hash-max-listpack-entries`` (128 entries, two per field) up to 8 known devices. The old
# ziplist name is the one every engine accepts (Redis 6.2 knows no other; Redis 7 and
# Valkey take it as an alias of the listpack setting).
RECOMMENDED_REDIS_CONFIG = {"hash-max-ziplist-value": "1024"}


def recommended_redis_args() -> list[str]:
    """Return ``RECOMMENDED_REDIS_CONFIG`` as redis-server command-line arguments."""
    return [arg for name, value in RECOMMENDED_REDIS_CONFIG.items()
            for arg in (f"--{name}", value)]


# Flask-Limiter's counters (throttle.py) live under this prefix; limits adds its own
# ``{...}`` hash tag per counter, so each one sits in one slot.
RATE_LIMIT_KEY_PREFIX = f"{KEY_PREFIX}:rl"
# The streams of security events (D4) a security team consumes, each capped with MAXLEN ~:
# the alerts (SECURITY_STREAM_KEY), which only a genuine token or an operator can raise,
# and the noise anyone can (events.py), so that a flood of the one never evicts the other.
# The OAuth client registry: one hash, one field per client (see the module docstring).
CLIENTS_KEY = f"{KEY_PREFIX}:{{clients}}"
SECURITY_NOISE_STREAM_KEY = f"{KEY_PREFIX}:security-noise"
# The live-session total the last sweep counted and when (a hash: ``n`` sessions, ``t`` ms
# on Redis server time), which /metrics serves as a gauge (observability.py). One key in
# one slot, written once per sweep: no request path counts sessions (sweep_sessions).
LIVE_SESSIONS_KEY = f"{KEY_PREFIX}:{{live-sessions}}"


def _user_id_of(key: str) -> str:
    """Return the user id in a user record's key (the inverse of ``user_key``)."""
    head, tail = user_key("\0").split("\0")
    return key[len(head):-len(tail)]


def fence_key(user_id: str) -> str:
    """Return the short-lived key a revocation's confirmation writes in the user's slot."""
    return f"{user_tag(user_id)}:fence"


def username_key(username: str) -> str:
    """Return the key of the case-insensitive username index entry."""
    return f"{KEY_PREFIX}:{{n:{username.lower()}}}"


def _script_source(name: str) -> str:
    """Return ``name``'s body: the shared ones from latchkey_resource, the rest from ``lua/``."""
    if name == scripts.VERIFY_TOUCH:
        return scripts.lua_source(name)
    return (resources.files("latchkey_server") / "lua" / f"{name}.lua").read_text()


def _script(client: redis.Redis, name: str) -> scripts.Script:
    """Return the runner of ``lua/<name>.lua``: latchkey_resource's ``Script`` (FCALL of
    its library where the store allows, else EVALSHA), the one runner resource servers
    use too."""
    return scripts.Script(client, name, _script_source(name), log=_log)


def _encode_record(fields: dict[str, Any]) -> str:
    """Encode a script's argument record as the one JSON ARGV its header documents.

    Display strings go as raw UTF-8 rather than ``\\u`` escapes: shorter, and nothing for
    cjson to unescape; the script's length checks count the same bytes either way.
    """
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


# What a store that cannot answer raises. ``RedisClusterException`` is not a ``RedisError``:
# redis-py's cluster client raises it when no node of the cluster answers at all.
STORE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError, redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError, redis.exceptions.RedisClusterException,
)


def _store_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost or timed-out Redis connection into ``StoreUnavailable`` (fail closed)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except STORE_DOWN_ERRORS as exc:
            raise StoreUnavailable() from exc

    return wrapper


# -- what the scripts answer, decoded ---------------------------------------------------
# The replies of a refused DPoP jti (``dpop_jti_fresh`` in the prelude).
_PROOF_REFUSALS = {"dpop_replayed": "replayed", "dpop_full": "full"}
# What a client is told for each.
PROOF_REFUSED = {"replayed": "The DPoP proof was used already: make a new one",
                 "full": "Too many DPoP proofs for this account in the proof window"}


class Rotation(StrEnum):
    """What ``rotate_refresh.lua`` did with a presented refresh token."""

    ROTATED = "rotated"    # the current token: here is its successor
    REPLAYED = "replayed"  # the previous token inside the grace window: the same successor
    ENDED = "ended"        # the session is over (perhaps just now); see state and reason
    REUSED = "reused"      # the previous token after the window: the session was ended
    CHECK = "check"        # a minted token of an older generation: an ancestor
    WRONG_CLIENT = "wrong_client"  # issued to another client: nothing changed
    DPOP_STOLEN = "dpop_stolen"  # a bound session's token without its key (or another)
    DPOP_REPLAYED = "dpop_replayed"  # the proof's jti was seen: nothing changed
    DPOP_FULL = "dpop_full"  # the user's jti set is full: nothing changed
    UNKNOWN = "unknown"    # no such session, or not a token of it


class Revocation(StrEnum):
    """What ``revoke_session.lua`` did."""

    REVOKED = "revoked"  # the session was live and is now ended
    ENDED = "ended"      # it was already over
    UNKNOWN = "unknown"  # no such session (or the refresh hash is not one of it)
    WRONG_CLIENT = "wrong_client"  # issued to another client than the one asking


class EndedSession(NamedTuple):
    """One session a script ended, and why."""

    session_id: str
    reason: str

    @property
    def expired(self) -> bool:
        """Return True if it ran out (idle or absolute limit) rather than was ended."""
        return self.reason in EXPIRY_REASONS


def _ended_pairs(flat: list[str]) -> list[EndedSession]:
    return [EndedSession(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


@dataclass(frozen=True)
class CreatedSession:
    """A session ``create_session.lua`` created, and the sessions it ended on the way."""

    created_ms: int
    ended: list[EndedSession]


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
    """What ``rotate_refresh.lua`` did with a presented refresh token."""

    outcome: Rotation
    absolute_left_ms: int = 0
    auth_level: str = ""
    auth_time: int = 0
    state: SessionState = SessionState.UNKNOWN  # with ENDED and CHECK
    reason: str = ""
    current_generation: int = 0
    current_hash: str = ""
    previous_hash: str = ""
    just_ended: bool = False
    # As in ``SessionCheck``: a binding change to report now, or why enforcement ended it.
    binding_changed: str = ""
    jkt: str = ""  # ROTATED/REPLAYED: the DPoP key the session is bound to ('' if none)
    dpop_missing: str = ""  # DPOP_STOLEN: 'no_proof' or 'other_key'

    @classmethod
    def from_reply(cls, reply: list[Any]) -> RotationResult:
        """Decode the script's reply (its header documents the shapes)."""
        outcome = Rotation(reply[0])
        if outcome in (Rotation.ROTATED, Rotation.REPLAYED):
            return cls(outcome, int(reply[1]), reply[2], int(reply[3]),
                       binding_changed=reply[4], jkt=reply[5])
        if outcome is Rotation.DPOP_STOLEN:
            return cls(outcome, dpop_missing=reply[1], just_ended=len(reply) > 2)
        if outcome is Rotation.ENDED:
            return cls(outcome, state=SessionState(reply[1]), reason=reply[2],
                       just_ended=len(reply) > 3,
                       binding_changed=reply[4] if len(reply) > 4 else "")
        if outcome is Rotation.CHECK:
            return cls(outcome, current_generation=int(reply[1]), current_hash=reply[2],
                       previous_hash=reply[3], state=SessionState(reply[4]), reason=reply[5])
        return cls(outcome)


@dataclass(frozen=True)
class ClientRecord:
    """One registered OAuth client; ``secret_hash`` is a keyed hash, never the secret."""

    client_id: str
    name: str
    client_type: str  # "public" or "resource"
    created_at: str
    secret_hash: str = field(default="", repr=False)

    def to_json(self) -> str:
        """Encode the record as the registry stores it."""
        return json.dumps({"name": self.name, "type": self.client_type,
                           "created": self.created_at, "secret_hash": self.secret_hash},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, client_id: str, raw: str) -> ClientRecord:
        """Decode a stored record."""
        data = json.loads(raw)
        return cls(client_id, data["name"], data["type"], data["created"],
                   data.get("secret_hash", ""))


class Pruned(NamedTuple):
    """What pruning one user's records did, and how many of their sessions are live."""

    dropped: int
    left: int
    live: int


class Swept(NamedTuple):
    """What sweeping every user's records did, and the live sessions it counted."""

    users: int
    dropped: int
    left: int
    live: int


class LiveSessions(NamedTuple):
    """The live-session total the last sweep recorded, and when (ms, Redis server time)."""

    total: int
    measured_ms: int


class SessionStore:
    """All session and user state in Redis, behind intention-revealing methods.

    The store is handed a client (``redis_connection.connect``); it never decides which
    Redis to talk to. Each method that runs a script runs the script of its own name.
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self._settings = settings
        self._retention_ms = settings.ended_session_retention_seconds * 1000
        self._idle_ms = settings.idle_timeout_seconds * 1000
        # A jti is remembered until its proof's iat window has surely passed: the proof may
        # be up to one window early, and is refused one window after its iat (plus slack
        # for the clocks of Redis and the workers).
        self._jti_ttl_ms = (2 * settings.dpop_iat_window_seconds + 5) * 1000
        self._create_session = _script(client, "create_session")
        self._verify_touch = _script(client, "verify_touch")
        self._rotate_refresh = _script(client, "rotate_refresh")
        self._revoke_session = _script(client, "revoke_session")
        self._end_sessions = _script(client, "end_sessions")
        self._list_sessions = _script(client, "list_sessions")
        self._prune_sessions = _script(client, "prune_sessions")
        self._record_live_sessions = _script(client, "record_live_sessions")
        self._set_password_hash = _script(client, "set_password_hash")
        self._barrier = RevocationBarrier(settings)
        self._policy_published = False
        self._policy_event_key: bytes | None = None
        self._policy_nonce_key = b""

    def session_policy(self, event_key: bytes, nonce_key: bytes = b"") -> SessionPolicy:
        """Return the policy resource servers must apply to this server's sessions: the
        session limits, binding and the DPoP settings (with nonces on, ``nonce_key``, the
        purpose-bound secret the token server's nonces come from)."""
        s = self._settings
        return SessionPolicy(idle_ms=self._idle_ms, retention_ms=self._retention_ms,
                             binding_policy=s.binding_policy, issuer=s.issuer,
                             audience=s.audience, default_client_id=s.default_client_id,
                             event_key=event_key.hex(),
                             security_stream_max_length=s.security_stream_max_length,
                             dpop=s.dpop, dpop_iat_window_seconds=s.dpop_iat_window_seconds,
                             dpop_jti_limit=s.dpop_jti_limit,
                             dpop_theft_policy=s.dpop_theft_policy,
                             dpop_nonce_key=(nonce_key.hex() if s.dpop_nonce == "on"
                                             and s.dpop != "off" else ""),
                             dpop_nonce_period_seconds=s.dpop_nonce_period_seconds,
                             security_events_per_source=s.security_events_per_source,
                             security_event_window_seconds=s.security_event_window_seconds)

    def publish_policy(self, event_key: bytes, nonce_key: bytes = b"") -> bool:
        """Publish the session policy for resource servers (``latchkey_resource.policy``);
        say whether the store took it. The serving process calls it at start."""
        self._policy_event_key, self._policy_nonce_key = event_key, nonce_key
        try:
            publish_policy(self.client, self.session_policy(event_key, nonce_key))
        except STORE_DOWN_ERRORS:
            return False
        self._policy_published = True
        return True

    def publish_policy_with_first_session(self, event_key: bytes,
                                          nonce_key: bytes = b"") -> None:
        """Publish the policy again with this process's first session (one HSET per
        worker), so a store that was down at start, or lost its data since, holds it before
        any session a resource server could check exists. Operator commands, which create
        no session, never write it."""
        self._policy_event_key, self._policy_nonce_key = event_key, nonce_key

    def _stored_client(self, client_id: str | None) -> str:
        """Return a client id as session records hold it: '' for the built-in client."""
        if client_id is None or client_id == self._settings.default_client_id:
            return ""
        return client_id

    def client_of(self, check: SessionCheck) -> str:
        """Return the client id a checked session was issued to."""
        return check.client_id or self._settings.default_client_id

    # -- health ---------------------------------------------------------------------
    @_store_call
    def ping(self) -> bool:
        """Return True if Redis answers."""
        return bool(self.client.ping())

    # -- security events (D4) -------------------------------------------------------
    @_store_call
    def append_security_event(self, fields: dict[str, str], max_length: int, *,
                              alert: bool = True) -> str:
        """Add one event to the alert (or the noise) stream, trimmed to about
        ``max_length`` entries.

        ``MAXLEN ~`` lets Redis trim whole radix-tree nodes only, which keeps XADD O(1);
        the stream may hold slightly more than ``max_length`` entries.
        """
        # The casts: redis-py types the fields dict invariantly (a dict[str, str] fits but is
        # not a dict[FieldT, EncodableT]) and every reply as bytes | str, though a client
        # made by redis_connection.connect decodes replies (decode_responses=True).
        entry_id = self.client.xadd(SECURITY_STREAM_KEY if alert else SECURITY_NOISE_STREAM_KEY,
                                    cast("dict[Any, Any]", fields), maxlen=max_length,
                                    approximate=True)
        return cast(str, entry_id)

    @_store_call
    def count_security_event(self, name: str, ttl_seconds: int) -> int:
        """Count one event of a source in a window (``name``); return the count so far
        (``latchkey_resource.event_budget``: resource servers count in the same keys)."""
        return count_in_store(self.client, name, ttl_seconds)

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
        return cast("str | None", self.client.get(username_key(username)))  # decoded reply

    @_store_call
    def get_user(self, user_id: str) -> dict[str, str]:
        """Return a user's record (empty if unknown), without their sessions."""
        values = cast("list[str | None]",  # decoded replies
                      self.client.hmget(user_key(user_id), list(USER_FIELDS)))
        return {name: value for name, value in zip(USER_FIELDS, values, strict=True)
                if value is not None}

    @_store_call
    def set_password_hash(self, user_id: str, password_hash: str, *, verified_hash: str,
                          new_credential: bool = True) -> bool:
        """Replace a user's password hash if it is still ``verified_hash``; say if it was.

        A compare-and-set: no write of a hash may undo a change committed since the caller
        read it. ``new_credential`` (a new password, not a rehash) moves the credential
        generation on, so logins that verified the old password are refused.
        """
        return bool(self._set_password_hash(
            keys=[user_key(user_id)],
            args=[verified_hash, password_hash, "1" if new_credential else "0"]))

    @_store_call
    def is_known_device(self, user_id: str, device_ref: str) -> bool:
        """Say whether a device (by pseudonym) has signed in to this user before."""
        return bool(self.client.hexists(user_key(user_id), KNOWN_DEVICE_PREFIX + device_ref))

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
        client_id: str | None = None,
        verified_generation: str = "",
        rehashed_password_hash: str = "",
        known_device_ref: str = "",
        dpop_jkt: str = "",
        dpop_jti: str = "",
    ) -> CreatedSession:
        """Create a session under the concurrency policy; return it and what it ended.

        With ``new_password_hash`` the password changes in the same atomic step, provided
        the stored hash is still ``verified_password_hash``; else ``InvalidCredentials``.
        With ``verified_generation`` (a login) the user's credential generation must still
        be the one read with the verified hash, else ``InvalidCredentials``: a password
        change, logout-all or revoke-all committed meanwhile. ``rehashed_password_hash``
        replaces the verified hash only if it is still stored (compare-and-set).
        ``known_device_ref`` records the device as one that signed in (D2).
        ``dpop_jkt`` binds the session to a DPoP key; ``dpop_jti``, the proof's, is accepted
        once (``InvalidDPoPProof`` if seen, with nothing changed).
        With ``replaces`` and no ``device_name``, the new session keeps the replaced one's;
        if the session to replace is no longer live (a remote sign-out or a timeout raced
        the caller's request), nothing changes and ``SessionRevoked`` or
        ``SessionExpired`` says why. The arguments travel as one JSON record whose fields
        ``lua/create_session.lua`` documents.
        """
        if not self._policy_published and self._policy_event_key is not None:
            self.publish_policy(self._policy_event_key, self._policy_nonce_key)
        s = self._settings
        keys = [user_key(user_id)] + ([dpop_jti_key(user_id)] if dpop_jti else [])
        created, ended = self._create_session(keys=keys, args=[_encode_record({
            "sid": session_id,
            "absolute_ttl_ms": s.absolute_timeout_seconds * 1000,
            "idle_ms": self._idle_ms,
            "retention_ms": self._retention_ms,
            "max_sessions": s.max_sessions_per_user,
            "single_session": s.single_session,
            "keep_ended": ENDED_SESSIONS_KEPT,
            "refresh_hash": refresh_hash,
            "auth_level": auth_level,
            "auth_time": auth_time,
            "device_id": device_id,
            "device_name": device_name,
            "user_agent": user_agent,
            "ip": ip,
            "replaces": replaces,
            "replaced_reason": replaced_reason,
            "end_others_reason": end_others_reason,
            "new_password_hash": new_password_hash,
            "verified_password_hash": verified_password_hash,
            "client_id": self._stored_client(client_id),
            "verified_generation": verified_generation,
            "rehashed_password_hash": rehashed_password_hash,
            "known_device": known_device_ref,
            "dpop_jkt": dpop_jkt,
            "dpop_jti": dpop_jti,
            "dpop_jti_ttl_ms": self._jti_ttl_ms,
            "dpop_jti_limit": s.dpop_jti_limit,
        })])
        if int(created) == -3:
            raise InvalidDPoPProof(PROOF_REFUSED[_PROOF_REFUSALS["dpop_" + ended[0]]])
        if int(created) == -1:
            raise InvalidCredentials("The credentials changed meanwhile; sign in again")
        if int(created) == -2:
            state, reason = ended
            if state == SessionState.EXPIRED:
                raise SessionExpired(reason)
            raise SessionRevoked(reason or None)
        return CreatedSession(int(created), _ended_pairs(ended))

    @_store_call
    def verify_touch(self, user_id: str, session_id: str, *, device_id: str = "",
                     user_agent: str = "", binding_fingerprint: str = "",
                     binding_policy: str | None = None, refresh_hash: str = "",
                     dpop_jti: str = "", dpop_stolen_revoke: bool = False) -> SessionCheck:
        """Check a session is live on server time, apply the binding policy to this
        request's device id and user agent, and mark the session used: one round trip.

        Introspection passes ``binding_policy="off"`` (the caller is a resource server,
        not the device) and, for a refresh token, its ``refresh_hash``. ``dpop_jti`` is
        the request's DPoP proof's, accepted once (``SessionCheck.proof_refused`` if not).
        ``dpop_stolen_revoke`` ends a live session now with reason ``stolen`` (its bound
        token came without its key, under ``DPOP_STOLEN_TOKEN=revoke``).
        """
        policy = self._settings.binding_policy if binding_policy is None else binding_policy
        keys, args = verify_touch_call(
            user_id, session_id, idle_ms=self._idle_ms, retention_ms=self._retention_ms,
            binding_policy=policy, device_id=device_id, user_agent=user_agent,
            binding_fingerprint=binding_fingerprint, refresh_hash=refresh_hash,
            dpop_jti=dpop_jti, dpop_jti_ttl_ms=self._jti_ttl_ms,
            dpop_jti_limit=self._settings.dpop_jti_limit, dpop_stolen_revoke=dpop_stolen_revoke)
        return SessionCheck.from_reply(self._verify_touch(keys=keys, args=args))

    @_store_call
    def rotate_refresh(self, *, user_id: str, session_id: str, presented_hash: str,
                       successor_hash: str, presented_generation: int, device_id: str = "",
                       user_agent: str = "", binding_fingerprint: str = "",
                       client_id: str | None = None, dpop_jkt: str = "",
                       dpop_jti: str = "") -> RotationResult:
        """Present a refresh token: rotate, replay inside grace, or detect reuse; apply the
        binding policy to this request's device id and user agent: one round trip.

        ``client_id`` is the client presenting it (``None``: the built-in one); a token
        issued to another client answers ``WRONG_CLIENT`` and changes nothing. Unless
        DPoP is off, a bound session's token must come with a proof by its key
        (``dpop_jkt``; else ``DPOP_STOLEN``, and under ``DPOP_STOLEN_TOKEN=revoke`` the
        session ends), the proof's ``dpop_jti`` is accepted once, and a proof binds a
        session not bound yet.
        """
        s = self._settings
        keys = [user_key(user_id)] + ([dpop_jti_key(user_id)] if dpop_jti else [])
        return RotationResult.from_reply(self._rotate_refresh(
            keys=keys,
            args=[session_id, presented_hash, successor_hash, presented_generation,
                  self._idle_ms, s.refresh_reuse_grace_seconds * 1000, self._retention_ms,
                  s.binding_policy, device_id, user_agent, binding_fingerprint,
                  self._stored_client(client_id), "off" if s.dpop == "off" else "check",
                  dpop_jkt, "revoke" if s.dpop_theft_policy == "revoke" else "report",
                  dpop_jti, self._jti_ttl_ms, s.dpop_jti_limit],
        ))

    @_store_call
    def revoke_session(self, user_id: str, session_id: str, reason: str,
                       refresh_hash: str = "", *, only_client: str | None = None,
                       ) -> Revocation:
        """End one session with a reason (only if ``refresh_hash``, when given, is one of
        its refresh tokens, and if ``only_client``, when given, is the client it was
        issued to: RFC 7009 revocation)."""
        args: list[Any] = [session_id, reason, self._retention_ms, refresh_hash, self._idle_ms]
        if only_client is not None:
            args.append(self._stored_client(only_client))
        return Revocation(self._revoke_session(keys=[user_key(user_id)], args=args))

    @_store_call
    def end_sessions(self, user_id: str, *, current_session_id: str = "", scope: str = "all",
                     current_reason: str = "logout", others_reason: str = "remote",
                     ) -> list[EndedSession]:
        """End all of a user's sessions, or all but the caller's, atomically (L1).

        Returns each session ended; ``idle``/``absolute`` reasons mean it had already
        expired and was marked so.
        """
        return _ended_pairs(self._end_sessions(
            keys=[user_key(user_id)],
            args=[ENDED_SESSIONS_KEPT, current_session_id, scope, current_reason,
                  others_reason, self._idle_ms, self._retention_ms],
        ))

    @_store_call
    def make_durable(self, user_id: str) -> bool:
        """Wait until what this user's slot holds is fsynced and on a replica, as far as the
        store can confirm (durability.py); False if it did not confirm in time (L1)."""
        return self._barrier.confirm(self.client, fence_key(user_id))

    @_store_call
    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """Return a user's live sessions, oldest first, judged on Redis server time."""
        reply = self._list_sessions(
            keys=[user_key(user_id)], args=[self._idle_ms, self._retention_ms],
        )
        return [SessionInfo(sid, int(created), int(last),
                            min(int(absolute), int(last) + self._idle_ms),
                            level, name, agent, ip)
                for sid, created, last, absolute, level, name, agent, ip in reply[1:]]

    # -- OAuth clients --------------------------------------------------------------
    @_store_call
    def add_client(self, record: ClientRecord) -> bool:
        """Register a client; return False if its id is taken."""
        return bool(self.client.hsetnx(CLIENTS_KEY, record.client_id, record.to_json()))

    @_store_call
    def get_client(self, client_id: str) -> ClientRecord | None:
        """Return a registered client, or ``None``."""
        raw = cast("str | None", self.client.hget(CLIENTS_KEY, client_id))  # decoded replies
        return ClientRecord.from_json(client_id, raw) if raw else None

    @_store_call
    def list_clients(self) -> list[ClientRecord]:
        """Return every registered client, by id."""
        records = cast("dict[str, str]", self.client.hgetall(CLIENTS_KEY))  # decoded replies
        return [ClientRecord.from_json(cid, raw) for cid, raw in sorted(records.items())]

    @_store_call
    def delete_client(self, client_id: str) -> bool:
        """Remove a client; return False if there was none."""
        return bool(self.client.hdel(CLIENTS_KEY, client_id))

    # -- sweeping -------------------------------------------------------------------
    @_store_call
    def prune_sessions(self, user_id: str) -> Pruned:
        """Drop one user's session records past retention; return what went and stayed,
        and how many of the user's sessions are live on Redis server time."""
        dropped, left, live = self._prune_sessions(
            keys=[user_key(user_id)],
            args=[self._idle_ms, self._retention_ms, ENDED_SESSIONS_KEPT],
        )
        return Pruned(int(dropped), int(left), int(live))

    @_store_call
    def sweep_sessions(self, batch: int = 500) -> Swept:
        """Prune every user's session records and record the live sessions counted;
        return (users, records dropped, left, live).

        Scripts prune a user's records whenever they walk that user's sessions, but a
        user who never signs in again is never walked: this visits them all (SCAN, on
        every master of a cluster), one short script per user, so it can run while the
        server serves. Run it daily (``latchkey-server sessions sweep``). Since it visits
        every record anyway, it also sums the live sessions and writes the total once, to
        ``LIVE_SESSIONS_KEY``, for the ``latchkey_live_sessions`` gauge: counting there
        costs one integer per user, where keeping a count on every login, logout and
        expiry would cost every request and drift with every idle timeout. The total is
        as of each user's visit; the timestamp is when the sweep finished.
        """
        users = dropped = left = live = 0
        for key in self.client.scan_iter(match=user_key("*"), count=batch):
            gone, kept, user_live = self.prune_sessions(_user_id_of(key))
            users, dropped, left = users + 1, dropped + gone, left + kept
            live += user_live
        self._record_live_sessions(keys=[LIVE_SESSIONS_KEY], args=[live])
        return Swept(users, dropped, left, live)

    @_store_call
    def live_sessions(self) -> LiveSessions | None:
        """Return the live-session total the last sweep recorded, or ``None`` before any."""
        total, measured_ms = cast("list[str | None]",  # decoded replies
                                  self.client.hmget(LIVE_SESSIONS_KEY, ["n", "t"]))
        if total is None or measured_ms is None:
            return None
        return LiveSessions(int(total), int(measured_ms))
