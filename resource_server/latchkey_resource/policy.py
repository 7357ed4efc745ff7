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

And it carries the token server's DPoP policy (RFC 9449): the mode (``LATCHKEY_DPOP``),
the proof ``iat`` window and the per-user ``jti`` limit, what a bound token presented
without its key does (``LATCHKEY_DPOP_STOLEN_TOKEN``) and, with nonces on, the nonce key
and period, so a backend checks proofs exactly as the token server does. The nonce key is
purpose-bound too (``keys.py`` derives it for nonces only): with it one can make a nonce
the token server accepts, which only matters to someone who can also sign with a device's
private key, and even then a proof stays bound by its ``iat`` window; it mints and verifies
nothing else (docs/SECURITY.md, "DPoP nonces on resource servers").

Last, the flood budget of security events (``event_budget.py``): how many events of a kind
one source may write per window before only summaries are written, so a backend budgets
exactly as the token server does.
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

__all__ = ["DPOP_MODES", "DPOP_STOLEN_TOKEN_POLICIES", "PolicyCache", "PolicyMissing",
           "SessionPolicy", "publish_policy", "read_policy"]

DPOP_MODES = ("off", "allowed", "required")
DPOP_STOLEN_TOKEN_POLICIES = ("report", "revoke")

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
    # DPoP (see the module docstring). A policy published before DPoP decodes with the
    # token server's defaults.
    dpop: str = "allowed"
    dpop_iat_window_seconds: int = 60
    dpop_jti_limit: int = 2000
    dpop_theft_policy: str = "report"
    dpop_nonce_key: str = ""  # hex; '' while nonces are off
    dpop_nonce_period_seconds: int = 300
    # The flood budget of security events (event_budget.py); a policy published before it
    # decodes with the token server's defaults.
    security_events_per_source: int = 3
    security_event_window_seconds: int = 60

    @property
    def dpop_jti_ttl_ms(self) -> int:
        """How long a proof's jti is remembered: past both edges of the iat window (the
        token server's ``store.py`` uses the same rule)."""
        return (2 * self.dpop_iat_window_seconds + 5) * 1000

    def fields(self) -> dict[str, str]:
        """Return the policy as the hash fields ``POLICY_KEY`` holds."""
        return {"v": POLICY_VERSION, "idle_ms": str(self.idle_ms),
                "retention_ms": str(self.retention_ms), "binding": self.binding_policy,
                "issuer": self.issuer, "audience": self.audience,
                "default_client_id": self.default_client_id, "event_key": self.event_key,
                "stream_max": str(self.security_stream_max_length), "dpop": self.dpop,
                "dpop_iat_window": str(self.dpop_iat_window_seconds),
                "dpop_jti_limit": str(self.dpop_jti_limit),
                "dpop_stolen": self.dpop_theft_policy, "dpop_nonce_key": self.dpop_nonce_key,
                "dpop_nonce_period": str(self.dpop_nonce_period_seconds),
                "events_per_source": str(self.security_events_per_source),
                "event_window": str(self.security_event_window_seconds)}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> SessionPolicy:
        """Decode the hash; raise ``PolicyMissing`` if it is absent or unreadable."""
        try:
            policy = cls(int(fields["idle_ms"]), int(fields["retention_ms"]),
                         fields["binding"], fields["issuer"], fields["audience"],
                         fields["default_client_id"], fields.get("event_key", ""),
                         int(fields.get("stream_max", "100000")),
                         fields.get("dpop", "allowed"),
                         int(fields.get("dpop_iat_window", "60")),
                         int(fields.get("dpop_jti_limit", "2000")),
                         fields.get("dpop_stolen", "report"), fields.get("dpop_nonce_key", ""),
                         int(fields.get("dpop_nonce_period", "300")),
                         int(fields.get("events_per_source", "3")),
                         int(fields.get("event_window", "60")))
            bytes.fromhex(policy.dpop_nonce_key)
        except (KeyError, ValueError) as exc:
            raise PolicyMissing(f"{POLICY_KEY} is absent or unreadable") from exc
        if (policy.binding_policy not in BINDING_POLICIES or policy.idle_ms <= 0
                or policy.dpop not in DPOP_MODES
                or policy.dpop_theft_policy not in DPOP_STOLEN_TOKEN_POLICIES
                or policy.dpop_iat_window_seconds <= 0 or policy.dpop_jti_limit <= 0
                or policy.dpop_nonce_period_seconds <= 0
                or policy.security_events_per_source <= 0
                or policy.security_event_window_seconds <= 0):
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
