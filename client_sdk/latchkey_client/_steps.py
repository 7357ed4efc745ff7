"""Run the SDK's sans-I/O plans: the only code that sends, sleeps or waits on a file lock.

Every decision of the SDK (what to retry and when, how a refresh is replayed, what a logout
achieved) is a generator, a *plan*, that yields the I/O it needs as a step and gets the
outcome sent back, in the way httpx's ``Auth.auth_flow`` yields requests and gets
responses. A plan never touches a socket, a clock to sleep on or a lock it must wait for,
so the sync and async clients share every plan and differ only in :func:`run_sync` and
:func:`run_async`, which perform the steps.

A transport failure is *sent* into the plan as the exception object rather than thrown,
so a plan reads "outcome = yield Send(...); if it is an error ..." top to bottom.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from ._locks import ProcessLock

__all__: list[str] = []

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Send one HTTP request; the plan gets an ``httpx.Response`` or an ``httpx.TransportError``."""

    method: str
    url: httpx.URL
    timeout: httpx.Timeout
    auth: httpx.Auth | None = None
    # The body and headers: never part of the repr, since a refresh body holds a token.
    options: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Sleep:
    """Wait before the next attempt; the plan gets ``None``."""

    seconds: float


@dataclass(frozen=True)
class HoldProcessLock:
    """Wait until this process holds ``lock`` (the plan releases it itself); gets ``None``."""

    lock: ProcessLock


Step = Send | Sleep | HoldProcessLock
#: What every plan is: it yields steps, receives their outcomes and returns its result.
Plan = Generator[Step, Any, T]


def run_sync(plan: Plan[T], http: httpx.Client) -> T:
    """Drive ``plan`` to its result, performing each step with blocking calls."""
    try:
        step = next(plan)
        while True:
            outcome: Any = None
            if isinstance(step, Send):
                try:
                    outcome = http.request(step.method, step.url, auth=step.auth,
                                           timeout=step.timeout, **step.options)
                except httpx.TransportError as exc:
                    outcome = exc
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                step.lock.acquire()
            step = plan.send(outcome)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        # Run the plan's own clean-up (locks it holds) now, not at garbage collection.
        plan.close()


async def run_async(plan: Plan[T], http: httpx.AsyncClient) -> T:
    """Drive ``plan`` to its result on the running event loop."""
    try:
        step = next(plan)
        while True:
            outcome: Any = None
            if isinstance(step, Send):
                try:
                    outcome = await http.request(step.method, step.url, auth=step.auth,
                                                 timeout=step.timeout, **step.options)
                except httpx.TransportError as exc:
                    outcome = exc
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                # A file lock blocks: wait for it off the loop so other tasks keep running.
                await asyncio.to_thread(step.lock.acquire)
            step = plan.send(outcome)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()
