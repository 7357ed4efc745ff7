"""Sign the user out after a period without activity, with a warning first (L6).

The server enforces its own idle limit from server time; this timer mirrors it on the
device so an unattended phone shows the login screen instead of a live session, and warns
the user first. The app calls ``client.touch()`` on user activity (taps, key presses).
Background requests deliberately do not count as activity: a poll must not keep an
unattended session alive.

Two drivers around one pure :class:`~latchkey_client._timing.IdleSchedule`: a daemon thread
for the sync client and an asyncio task for the async one.

While the app is paused (``client.on_pause()``) a timer neither warns nor signs out: a phone
may freeze the process, and a sign-out half-done in the background helps no one. Time keeps
counting, so on ``client.on_resume()`` the client sees the limit passed and signs out then.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._timing import IdleSchedule

__all__ = ["AsyncIdleTimer", "IdleTimer", "default_warning_seconds"]


def default_warning_seconds(timeout_seconds: float) -> float:
    """Warn a minute ahead, or a quarter of the limit when the limit is short."""
    return min(60.0, timeout_seconds / 4.0)


class _IdleTimerBase:
    """What both drivers share: the schedule, the clock, the callbacks, the pure "what now"."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        warn_before_seconds: float,
        on_warning: Callable[[float], None],
        on_expired: Callable[[], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._schedule = IdleSchedule(timeout_seconds, warn_before_seconds, clock())
        self._on_warning = on_warning
        self._on_expired = on_expired
        self._paused = False
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _take_due(self, now: float) -> tuple[str, float]:
        """Return ``("wait", seconds)``, ``("warn", seconds_left)`` or ``("expire", 0)``.

        A warning is marked as given here, so each period of inactivity warns once.
        """
        kind, at = self._schedule.next_event(now)
        if kind == "wait":
            return kind, max(0.0, at - now)
        if kind == "warn":
            self._schedule.warned = True
            return kind, self._schedule.seconds_left(now)
        return kind, 0.0


class IdleTimer(_IdleTimerBase):
    """Run an :class:`IdleSchedule` on a daemon thread (``on_expired`` is a function)."""

    def _start(self) -> None:
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="latchkey-idle", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        """Record user activity now."""
        with self._cond:
            self._schedule.touch(self._clock())
            self._cond.notify()

    def seconds_left(self) -> float:
        """Return the idle seconds left before sign-out."""
        with self._cond:
            return self._schedule.seconds_left(self._clock())

    def pause(self, paused: bool = True) -> None:
        """Hold (``True``) or release (``False``) the warning and the sign-out."""
        with self._cond:
            self._paused = paused
            self._cond.notify()

    def stop(self) -> None:
        """Stop the timer without signing out."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if self._paused:
                    self._cond.wait()
                    continue
                kind, seconds = self._take_due(self._clock())
                if kind == "wait":
                    self._cond.wait(timeout=seconds)
                    continue
                if kind == "expire":
                    self._stopped = True
            # Callbacks run outside the lock: they may call touch() or logout().
            if kind == "warn":
                self._on_warning(seconds)
            else:
                self._on_expired()
                return


class AsyncIdleTimer(_IdleTimerBase):
    """Run an :class:`IdleSchedule` as a task on the running loop (``on_expired`` is async)."""

    _on_expired: Callable[[], Awaitable[object]]

    def _start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def touch(self) -> None:
        """Record user activity now (call from the event loop's thread)."""
        self._schedule.touch(self._clock())
        self._wake.set()

    def seconds_left(self) -> float:
        """Return the idle seconds left before sign-out."""
        return self._schedule.seconds_left(self._clock())

    def pause(self, paused: bool = True) -> None:
        """Hold (``True``) or release (``False``) the warning and the sign-out."""
        self._paused = paused
        self._wake.set()

    def stop(self) -> None:
        """Stop the timer without signing out."""
        if self._task is not asyncio.current_task():
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            if self._paused:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, seconds = self._take_due(self._clock())
            if kind == "wait":
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=seconds)
                continue
            if kind == "warn":
                self._on_warning(seconds)
                continue
            await self._on_expired()
            return
