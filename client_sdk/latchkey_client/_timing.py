"""Do every piece of timer and backoff arithmetic the SDK needs, in seconds, in one place.

Why one module: timer bugs hide in unit mix-ups (the anchor SDK mixes seconds and
milliseconds) and in reading the wall clock. Everything here takes ``now`` from a monotonic
clock as an argument and returns seconds, so each rule is a pure function with its own tests
and a device clock change cannot move any deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Deadline",
    "IdleSchedule",
    "backoff_delay_seconds",
    "refresh_due_at",
    "refresh_leeway_seconds",
]

Clock = Callable[[], float]

#: Never wait longer than this between two retries, whatever the attempt number.
MAX_BACKOFF_SECONDS = 8.0


def backoff_delay_seconds(
    attempt: int,
    *,
    base_seconds: float = 0.2,
    cap_seconds: float = MAX_BACKOFF_SECONDS,
    retry_after_seconds: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return how long to sleep before retry number ``attempt`` (1 for the first retry).

    "Full jitter" exponential backoff: a uniform draw in ``[0, min(cap, base * 2**(n-1))]``
    spreads a crowd of phones that lost the network together instead of having them all come
    back in the same instant. A server's ``Retry-After`` is a floor: asking sooner only earns
    another 429.
    """
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    # int ** int is typed Any (a negative exponent gives a float); attempt >= 1 here.
    doubling: int = 2 ** (attempt - 1)
    ceiling = min(cap_seconds, base_seconds * doubling)
    delay = ceiling * rand()
    if retry_after_seconds is not None:
        delay = max(delay, float(retry_after_seconds))
    return delay


def refresh_leeway_seconds(expires_in_seconds: float, *, leeway_seconds: float = 30.0) -> float:
    """Return how long before expiry to refresh: ``leeway`` but never more than half the life.

    A fixed 30 s leeway on a 300 s token refreshes at 270 s; on a 2 s token (tests, or a
    paranoid profile) it would refresh on every request, so it is capped at half the lifetime.
    """
    return max(0.0, min(leeway_seconds, expires_in_seconds / 2.0))


def refresh_due_at(
    received_at: float, expires_in_seconds: float, *, leeway_seconds: float = 30.0
) -> float:
    """Return the monotonic instant at which a token received at ``received_at`` is due."""
    return received_at + expires_in_seconds - refresh_leeway_seconds(
        expires_in_seconds, leeway_seconds=leeway_seconds
    )


@dataclass(frozen=True)
class Deadline:
    """A total time budget for one call, retries included, on a monotonic clock."""

    expires_at: float
    clock: Clock = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """Start a budget of ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    def remaining_seconds(self) -> float:
        """Return the seconds left, never negative."""
        return max(0.0, self.expires_at - self.clock())

    def expired(self) -> bool:
        """Say whether the budget is spent."""
        return self.remaining_seconds() <= 0.0

    def clip(self, seconds: float | None) -> float:
        """Return ``seconds`` shortened so it ends no later than the budget."""
        left = self.remaining_seconds()
        return left if seconds is None else min(seconds, left)

    def sooner(self, other: Deadline | None) -> Deadline:
        """Return whichever of the two budgets ends first (``self`` if ``other`` is None)."""
        return self if other is None or self.expires_at <= other.expires_at else other


@dataclass
class IdleSchedule:
    """Track user inactivity: when to warn and when the idle limit is reached.

    The app reports activity with :meth:`touch`; a driver asks :meth:`next_event` what to do
    and when. Pure state, so the warning/expiry rules are testable with a fake clock.
    """

    timeout_seconds: float
    warn_before_seconds: float
    last_activity_at: float
    warned: bool = False

    def touch(self, now: float) -> None:
        """Record user activity at ``now`` and re-arm the warning."""
        self.last_activity_at = now
        self.warned = False

    def expires_at(self) -> float:
        """Return the monotonic instant the idle limit is reached."""
        return self.last_activity_at + self.timeout_seconds

    def seconds_left(self, now: float) -> float:
        """Return the idle seconds left before logout, never negative."""
        return max(0.0, self.expires_at() - now)

    def next_event(self, now: float) -> tuple[str, float]:
        """Return ``(kind, at)``: ``"expire"``, ``"warn"`` or ``"wait"`` and when it is due.

        ``"warn"`` is due once per period of inactivity, ``warn_before_seconds`` before the
        limit; ``"expire"`` is due at the limit. A due event has ``at <= now``.
        """
        expire_at = self.expires_at()
        if now >= expire_at:
            return "expire", expire_at
        warn_at = expire_at - self.warn_before_seconds
        if not self.warned and self.warn_before_seconds > 0:
            return ("warn", warn_at) if now >= warn_at else ("wait", warn_at)
        return "wait", expire_at
