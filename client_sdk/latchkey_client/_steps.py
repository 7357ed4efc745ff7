"""Run the SDK's sans-I/O plans: the only code that sends, sleeps or waits on a file lock.

Every decision of the SDK (what to retry and when, how a refresh is replayed, what a logout
achieved) is a generator, a *plan*, that yields the I/O it needs as a step and gets the
outcome sent back, in the way httpx's ``Auth.auth_flow`` yields requests and gets
responses. A plan never touches a socket, sleeps or waits for a lock, so the sync and async
clients share every plan and differ only in :func:`run_sync` and :func:`run_async`, which
perform the steps.

A transport failure is *sent* into the plan as the exception object rather than thrown,
so a plan reads "outcome = yield Send(...); if it is an error ..." top to bottom; so is a
:class:`~latchkey_client.errors.ClientClosedError` when the client was closed under the
plan (a ``signed_out`` listener may close it in the middle of a logout). The
helpers for a step's timeout and a failed step's error live here with the steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from ._locks import ProcessLock
from ._timing import Deadline
from .errors import ClientClosedError, NetworkError, NetworkTimeoutError

__all__: list[str] = []

T = TypeVar("T")


#: The request extension that carries a call's total deadline to the auth flow, so a
#: refresh the request needs first (and its replay) is bounded by the same deadline.
CALL_DEADLINE = "latchkey_call_deadline"


@dataclass(frozen=True)
class Send:
    """Send one HTTP request; the plan gets an ``httpx.Response`` or an ``httpx.TransportError``."""

    method: str
    url: httpx.URL
    timeout: httpx.Timeout
    auth: httpx.Auth | None = None
    # The body and headers: never part of the repr, since a refresh body holds a token.
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The whole call's deadline, for the auth flow (see :data:`CALL_DEADLINE`).
    deadline: Deadline | None = None

    def arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of ``httpx.Client.request`` for this step."""
        arguments = {"method": self.method, "url": self.url, "auth": self.auth,
                     "timeout": self.timeout, **self.options}
        if self.deadline is not None:
            arguments["extensions"] = {**(arguments.get("extensions") or {}),
                                       CALL_DEADLINE: self.deadline}
        return arguments


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


class _Stepper(Generic[T]):
    """Walk a plan for a driver: each step out, ``outcome`` back in, ``result`` at the end.

    The walk closes the plan however it ends, so a plan's own clean-up (a lock file it holds)
    runs at once, also when the driver fails or its task is cancelled.
    """

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self.outcome: Any = None
        self.result: T

    def __iter__(self) -> Iterator[Step]:
        try:
            step = next(self._plan)
            while True:
                yield step
                outcome, self.outcome = self.outcome, None
                step = self._plan.send(outcome)
        except StopIteration as done:
            self.result = done.value
        finally:
            self._plan.close()


def run_sync(plan: Plan[T], http: httpx.Client) -> T:
    """Drive ``plan`` to its result, performing each step with blocking calls."""
    steps = _Stepper(plan)
    for step in steps:
        if isinstance(step, Send):
            try:
                steps.outcome = http.request(**step.arguments())
            except httpx.TransportError as exc:
                steps.outcome = exc
            except RuntimeError as exc:
                steps.outcome = closed_client_error(http.is_closed, exc)
        elif isinstance(step, Sleep):
            time.sleep(step.seconds)
        else:
            step.lock.acquire()
    return steps.result


async def run_async(plan: Plan[T], http: httpx.AsyncClient) -> T:
    """Drive ``plan`` to its result on the running event loop."""
    steps = _Stepper(plan)
    for step in steps:
        if isinstance(step, Send):
            try:
                steps.outcome = await http.request(**step.arguments())
            except httpx.TransportError as exc:
                steps.outcome = exc
            except RuntimeError as exc:
                steps.outcome = closed_client_error(http.is_closed, exc)
        elif isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        else:
            # A file lock blocks: wait for it off the loop so other tasks keep running.
            await asyncio.to_thread(step.lock.acquire)
    return steps.result


# -- a step's timeout and a failed step's error -------------------------------------------

def map_transport_error(exc: httpx.TransportError, what: str | None = None) -> NetworkError:
    """Turn an httpx transport error into the SDK's network error (no URL, no headers).

    ``what`` names the call in the message when it is not the caller's own ("refresh").
    """
    prefix, name = (f"{what}: " if what else ""), type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return NetworkTimeoutError(f"{prefix}timed out talking to the server ({name})")
    return NetworkError(f"{prefix}could not talk to the server ({name})")


def closed_client_error(closed: bool, exc: RuntimeError) -> ClientClosedError:
    """Return the outcome of a step the closed client refused; re-raise any other error."""
    if not closed:
        raise exc
    if isinstance(exc, ClientClosedError):
        return exc
    error = ClientClosedError("the client is closed")
    error.__cause__ = exc
    return error


def never_sent(exc: httpx.TransportError) -> bool:
    """Say whether the request certainly never reached the server (safe to retry any call)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def call_deadline(request: httpx.Request) -> Deadline | None:
    """Return the total deadline of the SDK call ``request`` belongs to, if it has one.

    Requests an app sends through its own httpx client with ``client.auth`` have none.
    """
    deadline = request.extensions.get(CALL_DEADLINE)
    return deadline if isinstance(deadline, Deadline) else None


def clip_to_deadline(request: httpx.Request, deadline: Deadline | None) -> None:
    """Shorten ``request``'s timeouts to what is left of ``deadline``, or raise if none is.

    A refresh before the request may have spent part of the call's budget: what the request
    itself may take is what remains, not what the call started with.
    """
    if deadline is None:
        return
    left = deadline.remaining_seconds()
    if left <= 0:
        raise NetworkTimeoutError("the call's total deadline passed before it could be sent")
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        phase: left if value is None else min(value, left) for phase, value in timeouts.items()
    }


def attempt_timeout(base: httpx.Timeout, remaining_seconds: float) -> httpx.Timeout:
    """Shorten each phase of ``base`` so the attempt ends within ``remaining_seconds``."""

    def clip(value: float | None) -> float:
        return max(0.05, remaining_seconds if value is None else min(value, remaining_seconds))

    return httpx.Timeout(
        connect=clip(base.connect), read=clip(base.read), write=clip(base.write),
        pool=clip(base.pool),
    )
