"""Decide whether a security event is written, summarised or dropped: the flood budget.

A flood must neither drown nor evict the events that matter (H2). One stolen token replayed
in a loop, one replayed DPoP proof or one scanning client would otherwise write one line and
one stream entry per request, and the capped stream (``XADD MAXLEN ~``) would push the
alerts a security team needs out of it. So each source (the session an event names, else
the account or user, else the client address) may write ``per_source`` events of a kind
per window; after that only a summary, ``security_events_summarised`` with the count so
far, at 10, 100, 1000...

The token server (``latchkey_server.events``) and every resource server (``events.py``)
take this decision here, with the per-source count and window the token server publishes
(``policy.py``), and count in the same store keys: a source flooding a backend and the
token server at once is one source with one budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .store_keys import event_budget_key

__all__ = ["SUMMARY_COUNTS", "SUMMARY_EVENT", "EventBudget", "EventCounter", "count_in_store"]

SUMMARY_EVENT = "security_events_summarised"
# The counts at which a source over its budget writes a summary instead of the event.
SUMMARY_COUNTS = frozenset(10**k for k in range(1, 10))

# ``count(name, ttl_seconds)``: increment a shared counter, return its new value.
EventCounter = Callable[[str, int], int]


def count_in_store(client: Any, name: str, ttl_seconds: int) -> int:
    """Count one event of a source in a window (``name``); return the count so far.

    One key per counter, expiring with its window: INCR and EXPIRE in one pipeline.
    """
    key = event_budget_key(name)
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, ttl_seconds)
    return int(pipe.execute()[0])


class EventBudget:
    """Per source and window, let ``per_source`` events of a kind through, then summaries."""

    def __init__(self, count: EventCounter, per_source: int, window_seconds: int, *,
                 uncountable: tuple[type[Exception], ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._count = count
        self.per_source = per_source
        self.window_seconds = window_seconds
        self._uncountable = uncountable
        self._clock = clock

    def admit(self, event: str, source: str, *, alert: bool) -> dict[str, Any] | None:
        """Return None to write the event, {} to drop it, or the summary's fields to write
        instead (``summarised_event``, ``source``, ``count``, ``window_seconds``, ``alert``).

        A budget that cannot be counted (one of ``uncountable`` raised) writes the event:
        an outage of the counter must not lose it.
        """
        window_index = int(self._clock()) // self.window_seconds
        try:
            seen = self._count(f"{event}:{source}:{window_index}", self.window_seconds)
        except self._uncountable:
            return None
        if seen <= self.per_source:
            return None
        if seen not in SUMMARY_COUNTS:
            return {}
        return {"summarised_event": event, "source": source, "count": seen,
                "window_seconds": self.window_seconds, "alert": alert}
