"""Publish the token server's session policy to the store, and read it on resource servers.

The session check needs the idle timeout, the retention of ended records and the binding
policy (``verify_touch.lua``'s ARGV), and a verifier needs the issuer and audience the
tokens carry. Configuring them twice (the token server's ``LATCHKEY_*`` and each backend's
own) would let them drift, and a backend with a longer idle timeout would keep alive a
session the token server considers over. So the token server is the one place: it writes
its policy to one key, ``lk:{policy}``, when it starts (every worker, the same values), and
resource servers read it at their first request and then at most every
``refresh_seconds`` (5 s): no per-request cost, and a policy change reaches every backend
within seconds of the token server's restart.

The key also carries the key of the events' pseudonyms (``lk_session_ref``,
``lk_user_ref``), so that the events a resource server raises name a session exactly as the
token server's do and a security team can follow it across both. It is a purpose-bound
subkey: it mints nothing and verifies nothing; with it one can compute the pseudonym of an
id one already has, which the store's keys already name (docs/SECURITY.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .redis_client import STORE_DOWN_ERRORS
from .session_check import BINDING_POLICIES
from .store_keys import POLICY_KEY

__all__ = ["PolicyCache", "PolicyMissing", "SessionPolicy", "publish_policy", "read_policy"]

POLICY_VERSION = "1"


class PolicyMissing(Exception):
    """The store holds no session policy: no Latchkey server has started against it."""


@dataclass(frozen=True)
class SessionPolicy:
    """What the token server decides and every verifier of its sessions applies."""

    idle_ms: int
    retention_ms: int
    binding_policy: str
    issuer: str
    audience: str
    default_client_id: str
    event_key: str = ""  # hex; the pseudonym key of events (see the module docstring)
    security_stream_max_length: int = 100_000

    def fields(self) -> dict[str, str]:
        """Return the policy as the hash fields ``POLICY_KEY`` holds."""
        return {"v": POLICY_VERSION, "idle_ms": str(self.idle_ms),
                "retention_ms": str(self.retention_ms), "binding": self.binding_policy,
                "issuer": self.issuer, "audience": self.audience,
                "default_client_id": self.default_client_id, "event_key": self.event_key,
                "stream_max": str(self.security_stream_max_length)}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> SessionPolicy:
        """Decode the hash; raise ``PolicyMissing`` if it is absent or unreadable."""
        try:
            policy = cls(int(fields["idle_ms"]), int(fields["retention_ms"]),
                         fields["binding"], fields["issuer"], fields["audience"],
                         fields["default_client_id"], fields.get("event_key", ""),
                         int(fields.get("stream_max", "100000")))
        except (KeyError, ValueError) as exc:
            raise PolicyMissing(f"{POLICY_KEY} is absent or unreadable") from exc
        if policy.binding_policy not in BINDING_POLICIES or policy.idle_ms <= 0:
            raise PolicyMissing(f"{POLICY_KEY} holds an unknown policy")
        return policy


def publish_policy(client: Any, policy: SessionPolicy) -> None:
    """Write the policy (the token server, at start). One HSET: every field at once."""
    client.hset(POLICY_KEY, mapping=policy.fields())


def read_policy(client: Any) -> SessionPolicy:
    """Read the published policy; ``PolicyMissing`` if there is none."""
    # A client built with decode_responses=True answers str (verifier.py builds them so).
    return SessionPolicy.from_fields(cast("dict[str, str]", client.hgetall(POLICY_KEY)))


# What a failed read is: the key is gone or unreadable, or the store does not answer.
_READ_FAILURES: tuple[type[Exception], ...] = (PolicyMissing, *STORE_DOWN_ERRORS)


class PolicyCache:
    """Hold the published policy, read again at most every ``refresh_seconds``.

    A read that fails (store down, key gone) keeps the policy last read, so a backend
    that has served once carries on as the store allows; one that never read it cannot
    check a session and refuses (``PolicyMissing``, or the store's own error).
    """

    def __init__(self, read: Callable[[], SessionPolicy], refresh_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._policy: SessionPolicy | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> SessionPolicy:
        """Return the policy, reading it first if it is older than ``refresh_seconds``."""
        policy = self._policy
        if policy is not None and self._clock() - self._read_at < self._refresh_seconds:
            return policy
        with self._lock:
            if self._policy is not None and self._clock() - self._read_at < self._refresh_seconds:
                return self._policy
            try:
                self._policy = self._read()
            except _READ_FAILURES:
                if self._policy is None:
                    raise
            self._read_at = self._clock()
            return self._policy
