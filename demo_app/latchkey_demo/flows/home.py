"""Home: the profile from ``/v1/me``, this session, the idle countdown, and the demo backend.

The demo backend is a backend team's own API (``examples/flask_api``, started by
``devserver.py``): the SDK sends it the session because the app names its origin
(``api_origins``), and it checks the session in the shared store on every call, so a
session ended anywhere is refused there too, and the app says why.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import NumericProperty, StringProperty
from latchkey_client import LatchkeyClient

from ..wording import format_countdown
from .base import FlowScreen

__all__ = ["HomeScreen"]


class HomeScreen(FlowScreen):
    """Profile, this session and the countdowns (idle and absolute)."""

    username = StringProperty("")
    user_id_short = StringProperty("")
    idle_seconds_left = NumericProperty(0.0)
    idle_total_seconds = NumericProperty(0.0)
    idle_text = StringProperty("—")
    absolute_text = StringProperty("—")
    #: The demo backend's last answer, as it worded it.
    backend_answer = StringProperty("")

    #: The demo backend's protected endpoint (``examples/flask_api``).
    BACKEND_PATH = "/api/hello"

    def reset(self) -> None:
        """Forget whose profile this was."""
        self.username = ""
        self.user_id_short = ""
        self.backend_answer = ""

    def call_backend(self) -> None:
        """Call the demo backend with the session; a refusal signs out with its reason."""
        client, url = self.app.client, self.app.backend_url + self.BACKEND_PATH
        self.app.run(lambda: client.get(url).json(), "Asking the demo backend…",
                     self._show_backend)

    def _show_backend(self, answer: dict[str, Any]) -> None:
        self.backend_answer = str(answer.get("message", ""))

    def opened(self) -> None:
        """Reload the profile whenever the user comes back to Home."""
        self.load()

    def load(self) -> None:
        """Load the profile (``/v1/me``) and this device's session entry."""
        client = self.app.client

        def job() -> tuple[dict[str, Any], list[Any]]:
            me = client.get("/v1/me").json()
            return me, client.sessions()

        self.app.run(job, "Loading your profile…", self._show_profile)

    def _show_profile(self, result: tuple[dict[str, Any], list[Any]]) -> None:
        me, sessions = result
        self.username = str(me.get("username", ""))
        self.user_id_short = str(me.get("user_id", ""))[:12]
        # The same answer lists the devices: the Devices screen shows it at once, and this
        # device's name comes from the server's view of this session.
        self.manager.get_screen("sessions").show(sessions)
        self.app.update_session_facts()

    def show_countdowns(self, client: LatchkeyClient) -> float | None:
        """Show the idle and absolute countdowns (the SDK's timers; no network).

        Returns the idle seconds left, which the idle warning shows too.
        """
        info = client.session
        if info is not None:
            self.idle_total_seconds = info.idle_timeout_seconds
            absolute = info.absolute_expires_in_seconds
            self.absolute_text = format_countdown(absolute) if absolute is not None else "—"
        left = client.idle_seconds_left()
        self.idle_seconds_left = left or 0.0
        self.idle_text = format_countdown(left)
        return left
