"""Run blocking SDK calls off the UI thread and hand results back to it.

Kivy draws and handles touches on one thread; an HTTP call there freezes the app for as
long as the network takes (seconds on a poor mobile link). So screens never call the
network: the app submits a function here, it runs on a small thread pool, and the
``on_done``/``on_error`` callbacks are scheduled on the UI thread with
``Clock.schedule_once`` — the same hand-off ``kivy.network.urlrequest`` uses.

Every exception a job raises is delivered to ``on_error``; nothing a worker does can crash
the UI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from kivy.clock import Clock

__all__ = ["Worker"]

_log = logging.getLogger("latchkey_demo.worker")

T = TypeVar("T")


class Worker:
    """A small pool for SDK calls whose results come back on Kivy's main thread."""

    def __init__(self, *, max_workers: int = 3) -> None:
        # A few threads, not one: a slow call (say a logout to an unreachable server) must
        # not hold up the user's next action. The SDK is thread-safe and refreshes once for
        # any number of concurrent callers.
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="latchkey-demo")
        self._closed = False

    def submit(
        self,
        job: Callable[[], T],
        *,
        on_done: Callable[[T], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> Future[T] | None:
        """Run ``job`` on a worker thread; call back on the UI thread with its outcome."""
        if self._closed:
            return None
        future = self._pool.submit(job)

        def deliver(done: Future[T]) -> None:
            # Runs on the worker thread: only hop to the UI thread from here. A job cancelled
            # by shutdown() has no outcome to deliver.
            if done.cancelled():
                return
            Clock.schedule_once(lambda _dt: self._finish(done, on_done, on_error), 0)

        future.add_done_callback(deliver)
        return future

    @staticmethod
    def _finish(
        future: Future[T],
        on_done: Callable[[T], Any] | None,
        on_error: Callable[[BaseException], Any] | None,
    ) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if on_error is not None:
                on_error(error)
            else:
                _log.warning("background call failed: %s", type(error).__name__)
            return
        if on_done is not None:
            on_done(future.result())

    def shutdown(self) -> None:
        """Stop taking jobs; let running ones finish in the background."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
