"""Record the session life cycle and security events as structured, token-free facts.

Every event names a session by a keyed pseudonym (``session_ref``), never by its id: the
id appears in a URL path (``DELETE /v1/auth/sessions/{id}``) and must stay out of logs,
yet a security team still needs to follow one session across events. The pseudonym is an
HMAC under a server key, so it cannot be reversed or precomputed from a leaked id list.

Security events (reuse, token in URL, binding change, brute force...) go through
``security()``, the one place that later also feeds the Redis stream and the metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

__all__ = ["LIFECYCLE_EVENTS", "SECURITY_EVENTS", "EventLog"]

_life = logging.getLogger("latchkey.events")
_sec = logging.getLogger("latchkey.security")

LIFECYCLE_EVENTS = frozenset({
    "session_created", "session_refreshed", "session_expired", "session_logged_out",
    "session_revoked", "user_registered", "password_changed",
})
SECURITY_EVENTS = frozenset({
    "refresh_token_reused", "token_in_url", "binding_changed", "brute_force",
    "token_guessing", "unknown_session_token", "admin_action",
    "revocation_unconfirmed",  # L1: the store did not confirm a revocation durable in time
})


class EventLog:
    """Write lifecycle and security events with pseudonymous session references."""

    def __init__(self, pseudonym_key: bytes) -> None:
        self._key = pseudonym_key
        self._sinks: list[Any] = []

    def session_ref(self, session_id: str) -> str:
        """Return the log pseudonym of a session id."""
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:16]

    def user_ref(self, user_id: str) -> str:
        """Return the log pseudonym of a user id."""
        return hmac.new(self._key, b"user:" + user_id.encode(), hashlib.sha256).hexdigest()[:16]

    def add_sink(self, sink: Any) -> None:
        """Register a callable ``sink(event, fields)`` that also receives security events."""
        self._sinks.append(sink)

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
        """Log one security event and hand it to every registered sink."""
        assert event in SECURITY_EVENTS, event
        extra = self._fields(session_id, user_id, fields)
        _sec.warning(event, extra={"event": event, **extra})
        for sink in self._sinks:
            sink(event, {k[3:]: v for k, v in extra.items()})
