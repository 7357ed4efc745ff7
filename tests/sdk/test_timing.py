"""The timer and backoff maths, with fake clocks: one unit (seconds), no wall clock."""

from __future__ import annotations

import pytest
from latchkey_client._timing import (
    MAX_BACKOFF_SECONDS,
    Deadline,
    IdleSchedule,
    backoff_delay_seconds,
    refresh_due_at,
    refresh_leeway_seconds,
)


def test_backoff_grows_exponentially_within_full_jitter_bounds() -> None:
    assert backoff_delay_seconds(1, rand=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay_seconds(2, rand=lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay_seconds(4, rand=lambda: 1.0) == pytest.approx(1.6)
    assert backoff_delay_seconds(3, rand=lambda: 0.0) == 0.0
    assert backoff_delay_seconds(3, rand=lambda: 0.5) == pytest.approx(0.4)


def test_backoff_is_capped() -> None:
    assert backoff_delay_seconds(40, rand=lambda: 1.0) == MAX_BACKOFF_SECONDS


def test_backoff_never_retries_sooner_than_retry_after() -> None:
    assert backoff_delay_seconds(1, retry_after_seconds=7, rand=lambda: 1.0) == 7.0


def test_backoff_jitter_spreads_retries() -> None:
    delays = {round(backoff_delay_seconds(5), 6) for _ in range(50)}
    assert len(delays) > 40


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay_seconds(0)


def test_refresh_leeway_is_capped_at_half_the_lifetime() -> None:
    assert refresh_leeway_seconds(300) == 30
    assert refresh_leeway_seconds(2) == 1
    assert refresh_leeway_seconds(0) == 0


def test_refresh_is_due_before_expiry_measured_from_receipt() -> None:
    assert refresh_due_at(1000.0, 300) == 1270.0
    assert refresh_due_at(5.0, 2) == 6.0


def test_deadline_counts_down_and_clips() -> None:
    now = [100.0]
    deadline = Deadline.after(10, clock=lambda: now[0])
    assert deadline.remaining_seconds() == 10
    assert deadline.clip(3) == 3
    now[0] = 108.0
    assert deadline.clip(5) == 2
    assert deadline.clip(None) == 2
    now[0] = 120.0
    assert deadline.expired() and deadline.remaining_seconds() == 0


def test_idle_schedule_waits_then_warns_once_then_expires() -> None:
    s = IdleSchedule(timeout_seconds=60, warn_before_seconds=10, last_activity_at=0)
    assert s.next_event(0) == ("wait", 50)
    assert s.next_event(50) == ("warn", 50)
    s.warned = True
    assert s.next_event(55) == ("wait", 60)
    assert s.next_event(60) == ("expire", 60)
    assert s.seconds_left(55) == 5


def test_idle_schedule_touch_postpones_and_rearms_warning() -> None:
    s = IdleSchedule(timeout_seconds=60, warn_before_seconds=10, last_activity_at=0)
    s.warned = True
    s.touch(55)
    assert s.next_event(56) == ("wait", 105)
    assert s.next_event(105) == ("warn", 105)
    assert s.next_event(115) == ("expire", 115)
