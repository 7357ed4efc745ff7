"""Raise the events a session check causes, in the shape the token server raises them.

The check is the same script on both sides, so what it does is the same: end a session
that ran out (idle, absolute), end one whose device changed under ``enforce``, report a
device change under ``report``, find a genuine token naming no session. The token
server's session service raises an event for each; a resource server running the check
must not lose them, so it raises the same ones here:

- life-cycle events (``session_expired``, ``session_revoked``) as log records on the
  ``latchkey.events`` logger, as the token server logs them;
- security alerts (``binding_changed``, ``unknown_session_token``) as log records on
  ``latchkey.security`` *and* appended to the same stream, ``lk:security-events``
  (``XADD MAXLEN ~``), with the same fields, plus ``service`` naming the resource server.

Sessions and users are named by the token server's pseudonyms (``session_ref``,
``user_ref``), computed with the key it publishes (``policy.py``). These paths are rare (a
session ends once; a binding change is reported once per fingerprint), so the extra
command they cost is not on the hot path. Unlike the token server's, these are not
budgeted per source: only a genuine token can raise them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Any

import redis

from .event_budget import SUMMARY_EVENT, EventBudget, count_in_store
from .policy import SessionPolicy
from .redis_client import STORE_DOWN_ERRORS
from .session_check import EXPIRY_REASONS
from .store_keys import SECURITY_STREAM_KEY

__all__ = ["ResourceEvents"]

# A counter the store cannot keep (down, or an ACL from before the budget refusing INCR):
# the alert is written, not lost, and the request is not failed for it.
_UNCOUNTABLE: tuple[type[Exception], ...] = (*STORE_DOWN_ERRORS,
                                             redis.exceptions.NoPermissionError)

_life = logging.getLogger("latchkey.events")
_sec = logging.getLogger("latchkey.security")
_log = logging.getLogger("latchkey_resource")


def _stream_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ResourceEvents:
    """Write life-cycle and security events for what a session check did."""

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service

    @staticmethod
    def _refs(key_hex: str, session_id: str, user_id: str) -> dict[str, str]:
        if not key_hex:
            return {}
        key = bytes.fromhex(key_hex)
        return {
            "session_ref": hmac.new(key, session_id.encode(), hashlib.sha256).hexdigest()[:16],
            "user_ref": hmac.new(key, b"user:" + user_id.encode(),
                                 hashlib.sha256).hexdigest()[:16],
        }

    def session_ended(self, key_hex: str, user_id: str, session_id: str, reason: str) -> None:
        """Log the end of a session the check caused (the token server's mapping)."""
        event = "session_expired" if reason in EXPIRY_REASONS else "session_revoked"
        fields = {f"lk_{k}": v for k, v in self._refs(key_hex, session_id, user_id).items()}
        _life.info(event, extra={"event": event, **fields, "lk_reason": reason,
                                 "lk_service": self._service})

    def security(self, policy: SessionPolicy, event: str, /, *, user_id: str, session_id: str,
                 **fields: Any) -> None:
        """Log one security alert and append it to the security stream, within the budget
        of its source (the session it names)."""
        refs = self._refs(policy.event_key, session_id, user_id)
        source = refs.get("session_ref") or hashlib.sha256(session_id.encode()).hexdigest()[:16]
        budget = EventBudget(lambda name, ttl: count_in_store(self._client, name, ttl),
                             policy.security_events_per_source,
                             policy.security_event_window_seconds,
                             uncountable=_UNCOUNTABLE)
        summary = budget.admit(event, source, alert=True)
        if summary is None:
            self._write(event, {**refs, **fields}, policy.security_stream_max_length)
        elif summary:
            self._write(SUMMARY_EVENT, summary, policy.security_stream_max_length)

    def _write(self, event: str, fields: dict[str, Any], max_length: int) -> None:
        values = {**fields, "service": self._service}
        _sec.warning(event, extra={"event": event, **{f"lk_{k}": v for k, v in values.items()}})
        entry = {"event": event,
                 "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                     "+00:00", "Z")}
        entry.update({k: _stream_value(v) for k, v in values.items() if v is not None})
        try:
            self._client.xadd(SECURITY_STREAM_KEY, entry, maxlen=max_length, approximate=True)
        except STORE_DOWN_ERRORS:
            _log.warning("security event not added to the stream: store unavailable",
                         extra={"event": "security_stream_error", "lk_security_event": event})
