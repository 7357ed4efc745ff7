"""The shape every flow's screen shares: a handle on the App and two life-cycle hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from kivy.app import App
from kivy.uix.screenmanager import Screen

if TYPE_CHECKING:
    from ..app import LatchkeyDemoApp

__all__ = ["FlowScreen"]


class FlowScreen(Screen):
    """A screen that owns its flow's state; the App resets it when a session starts or ends."""

    @property
    def app(self) -> LatchkeyDemoApp:
        """Return the running demo App (the plumbing: client, worker, notices)."""
        return cast("LatchkeyDemoApp", App.get_running_app())

    def reset(self) -> None:
        """Forget what this flow showed: nothing of one session may show in the next."""

    def opened(self) -> None:
        """Get ready when the user navigates here, e.g. load what the screen shows."""
