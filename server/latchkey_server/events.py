"""Record the session life cycle and security events as structured, token-free facts.

Every event names a session by a keyed pseudonym (``session_ref``), never by its id: the
id appears in a URL path (``DELETE /v1/auth/sessions/{id}``) and must stay out of logs,
yet a security team still needs to follow one session across events. The pseudonym is an
HMAC under a server key, so it cannot be reversed or precomputed from a leaked id list.

Security events (reuse, token in URL, binding change, brute force...) go through
``security()``, the one place that later also feeds the Redis stream and the metrics.

A flood must neither drown nor evict the events that matter (H2, issue 13):

- Every event but ``admin_action`` is budgeted per source (the session it names, else
  the account, else the client address) per window (``latchkey_resource.event_budget``,
  the decision resource servers take too, in the same counters): the first
  ``SECURITY_EVENTS_PER_SOURCE`` are written; after that only a summary,
  ``security_events_summarised`` with the count so far, at 10, 100, 1000... So one
  stolen token, one attacker address or one scanning client writes a handful of lines
  per window, whatever it sends. Metrics count every event raised, budget or not.
- ``ALERT_EVENTS`` (reuse, a leaked token of ours, a minted token naming no session,
  binding changes, admin actions) need a genuine token or an operator to raise. They go
  to a stream of their own, ``lk:security-events``; what anyone can raise without one
  (brute force, token guessing, a token-shaped value in a URL that is none of ours) goes
  to ``lk:security-noise``. Unauthenticated traffic therefore cannot evict an alert.
- ``token_in_url`` means a token of ours leaked; a value that only looks like a token is
  ``token_shaped_value_in_url``, noise.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from latchkey_resource.event_budget import SUMMARY_EVENT, EventBudget, EventCounter

from .errors import StoreUnavailable

__all__ = ["ALERT_EVENTS", "LIFECYCLE_EVENTS", "SECURITY_EVENTS", "SUMMARY_EVENT", "EventLog"]

_life = logging.getLogger("latchkey.events")
_sec = logging.getLogger("latchkey.security")

LIFECYCLE_EVENTS = frozenset({
    "session_created", "session_refreshed", "session_expired", "session_logged_out",
    "session_revoked", "user_registered", "password_changed",
})
SECURITY_EVENTS = frozenset({
    "refresh_token_reused", "token_in_url", "binding_changed", "brute_force",
    "token_guessing", "unknown_session_token", "admin_action",
    "token_shaped_value_in_url", SUMMARY_EVENT,
    "revocation_unconfirmed",  # L1: the store did not confirm a revocation durable in time
    "dpop_stolen_token",  # P1: a DPoP-bound token without a proof by its key
    "dpop_proof_replayed",  # P1: a DPoP proof presented again (its jti was seen)
})
# Events only a genuine token or an operator can raise: the alert stream (see above).
ALERT_EVENTS = frozenset({
    "refresh_token_reused", "token_in_url", "binding_changed", "unknown_session_token",
    "admin_action", "dpop_stolen_token", "dpop_proof_replayed",
})
_UNBUDGETED = frozenset({"admin_action"})  # an operator's own actions: every one counts


class EventLog:
    """Write lifecycle and security events with pseudonymous session references."""

    def __init__(self, pseudonym_key: bytes) -> None:
        self._key = pseudonym_key
        self._sinks: list[Any] = []
        self._counters: list[Any] = []
        self._budget: EventBudget | None = None

    def session_ref(self, session_id: str) -> str:
        """Return the log pseudonym of a session id."""
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:16]

    def user_ref(self, user_id: str) -> str:
        """Return the log pseudonym of a user id."""
        return hmac.new(self._key, b"user:" + user_id.encode(), hashlib.sha256).hexdigest()[:16]

    def device_ref(self, user_id: str, device_id: str) -> str:
        """Return the pseudonym of one device of one user (a known device, D2)."""
        # surrogatepass: the id is untrusted JSON text; a lone surrogate is no reason to fail.
        name = f"device:{user_id}\0{device_id}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, name, hashlib.sha256).hexdigest()[:16]

    def add_sink(self, sink: Any) -> None:
        """Register a callable ``sink(event, fields)`` that also receives security events
        (those the budget lets through, and the summaries)."""
        self._sinks.append(sink)

    def add_counter(self, counter: Any) -> None:
        """Register a callable ``counter(event)`` told of every security event raised,
        budgeted or not (the metrics)."""
        self._counters.append(counter)

    def set_budget(self, count: EventCounter, per_source: int, window_seconds: int) -> None:
        """Budget events per source and window; ``count(key, ttl_seconds)`` increments a
        shared counter (the store's) and returns its new value."""
        self._budget = EventBudget(count, per_source, window_seconds,
                                   uncountable=(StoreUnavailable,))

    def _fields(self, session_id: str | None, user_id: str | None,
                fields: dict[str, Any]) -> dict[str, Any]:
        out = {f"lk_{k}": v for k, v in fields.items()}
        if session_id:
            out["lk_session_ref"] = self.session_ref(session_id)
        if user_id:
            out["lk_user_ref"] = self.user_ref(user_id)
        return out

    def lifecycle(self, event: str, *, session_id: str | None = None,
                  user_id: str | None = None, **fields: Any) -> None:
        """Log one session life-cycle event."""
        assert event in LIFECYCLE_EVENTS, event
        _life.info(event, extra={"event": event, **self._fields(session_id, user_id, fields)})

    def security(self, event: str, *, session_id: str | None = None,
                 user_id: str | None = None, **fields: Any) -> None:
        """Log one security event and hand it to every sink, within its source's budget."""
        if event == "token_in_url" and not session_id:
            event = "token_shaped_value_in_url"  # none of ours: noise, not a leak
        assert event in SECURITY_EVENTS, event
        for counter in self._counters:
            counter(event)
        extra = self._fields(session_id, user_id, fields)
        summary = self._over_budget(event, extra)
        if summary is None:
            self._write(event, extra)
        elif summary:
            self._write(SUMMARY_EVENT, summary)

    def _over_budget(self, event: str, extra: dict[str, Any]) -> dict[str, Any] | None:
        """Return None to write the event, {} to drop it, or the summary to write instead."""
        if self._budget is None or event in _UNBUDGETED:
            return None
        source = str(extra.get("lk_session_ref") or extra.get("lk_account_ref")
                     or extra.get("lk_user_ref") or extra.get("lk_ip") or "-")
        summary = self._budget.admit(event, source, alert=event in ALERT_EVENTS)
        return summary if not summary else {f"lk_{k}": v for k, v in summary.items()}

    def _write(self, event: str, extra: dict[str, Any]) -> None:
        _sec.warning(event, extra={"event": event, **extra})
        for sink in self._sinks:
            sink(event, {k[3:]: v for k, v in extra.items()})
