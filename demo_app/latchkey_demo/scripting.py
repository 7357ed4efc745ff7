"""Drive the real app from a script: for the screenshot renderer and the headless tests.

Kivy can run on asyncio (``App.async_run``), so a script is a coroutine running on the same
loop and thread as the UI: it sets text, taps buttons and waits for the app's properties to
change, exactly as a user's touches would, while the app's own worker threads talk to a
real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kivy.app import App
from kivy.uix.widget import Widget

__all__ = ["ScriptFailed", "find", "run_scripted", "tap", "type_into", "wait_until"]


class ScriptFailed(AssertionError):
    """A scripted step did not reach the state it waited for."""


async def wait_until(predicate: Callable[[], Any], *, timeout_seconds: float = 15.0,
                     what: str = "condition") -> Any:
    """Let the UI run until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScriptFailed(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def settle(seconds: float = 0.3) -> None:
    """Let a few frames draw (layouts and bindings finish)."""
    await asyncio.sleep(seconds)


def find(app: App, screen: str, *path: str) -> Widget:
    """Return screen ``screen``, or the widget at ``ids`` path ``path`` under it."""
    widget: Any = app.root.get_screen(screen)
    for name in path:
        widget = widget.ids[name]
    return widget


def tap(widget: Widget) -> None:
    """Press and release a button, as a finger would (activity counts, handlers run)."""
    if widget.disabled:
        raise ScriptFailed(f"cannot tap a disabled {type(widget).__name__}")
    from kivy.core.window import Window

    Window.dispatch("on_key_down", 0, 0, "", [])  # the app counts this as user activity
    widget.dispatch("on_press")
    widget.dispatch("on_release")


def type_into(field: Widget, text: str) -> None:
    """Type ``text`` into a :class:`~latchkey_demo.widgets.Field`."""
    field.ids.input.text = text


def run_scripted(app: App, script: Callable[[App], Awaitable[None]]) -> None:
    """Run ``app`` with ``script`` alongside; stop the app when it ends; re-raise failures."""
    failure: list[BaseException] = []

    async def drive() -> None:
        try:
            await wait_until(lambda: app.root is not None, what="the app to build")
            await settle(0.5)
            await script(app)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the app stops
            failure.append(exc)
        finally:
            # Leave the event loop, not the app: async_run() then stops the app itself once
            # no frame is in progress. app.stop() here would clear the running app while
            # the current frame still evaluates kv rules that refer to `app`.
            from kivy.base import stopTouchApp

            stopTouchApp()

    async def main() -> None:
        await asyncio.gather(app.async_run(async_lib="asyncio"), drive())

    asyncio.run(main())
    if failure:
        raise failure[0]
