"""Devices: every live session of the account; sign out one, all others, or everywhere."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import BooleanProperty, ListProperty, ObjectProperty, StringProperty
from latchkey_client import SignOutReason

from ..widgets import Card
from ..wording import format_relative, short_user_agent
from .base import FlowScreen

__all__ = ["SessionCard", "SessionsScreen"]


class SessionCard(Card):
    """One live session of the account, with a sign-out button unless it is this one."""

    session_id = StringProperty("")
    device = StringProperty("")
    agent = StringProperty("")
    seen = StringProperty("")
    ip = StringProperty("")
    current = BooleanProperty(False)
    elevated = BooleanProperty(False)
    #: The Devices screen, whose ``revoke`` the card's button calls.
    screen = ObjectProperty(None)


class SessionsScreen(FlowScreen):
    """Every live session of the account, this device first."""

    #: The live sessions, as dicts the cards render (no tokens in them).
    sessions = ListProperty([])
    loaded = BooleanProperty(False)

    def on_sessions(self, _screen: Any, rows: list[dict[str, Any]]) -> None:
        """Rebuild the cards when the list changes."""
        box = self.ids.session_list
        box.clear_widgets()
        for row in rows:
            box.add_widget(Factory.SessionCard(screen=self, **row))

    def reset(self) -> None:
        """Forget the last account's devices."""
        self.sessions = []
        self.loaded = False

    def opened(self) -> None:
        """Reload the list whenever the user comes here."""
        self.load()

    def load(self) -> None:
        """Reload the list of live sessions."""
        self.app.run(self.app.client.sessions, "Loading sessions…", self.show)

    def show(self, sessions: list[Any]) -> None:
        """Render the server's list; this device's entry names the device on every screen."""
        rows = []
        for s in sorted(sessions, key=lambda s: (not s.current, s.device_name or "")):
            rows.append({
                "session_id": s.session_id,
                "device": s.device_name or "Unnamed device",
                "agent": short_user_agent(s.user_agent),
                "seen": ("Active now" if s.current
                         else f"Last seen {format_relative(s.last_seen_at)}"),
                "ip": s.ip or "",
                "current": s.current,
                "elevated": s.auth_level == "elevated",
            })
            if s.current:
                self.app.device_name = s.device_name or self.app.device_name
        self.sessions = rows
        self.loaded = True

    def revoke(self, session_id: str) -> None:
        """End one other device's session, then reload the list."""
        client = self.app.client
        self.app.run(lambda: client.revoke_session(session_id), "Signing out that device…",
                     lambda _r: self._changed("That device was signed out."))

    def logout_others(self) -> None:
        """Sign out every other device of this account."""
        client = self.app.client
        self.app.run(lambda: client.logout_all(scope="others"), "Signing out other devices…",
                     lambda _r: self._changed("Signed out all other devices."))

    def logout_everywhere(self) -> None:
        """Sign out every session of this account, this one included."""
        app = self.app
        client = app.client
        app.expect_sign_out(SignOutReason.USER)
        app.run(lambda: client.logout_all(scope="all"), "Signing out everywhere…",
                lambda _r: app.show_signed_out(SignOutReason.USER,
                                               "You signed out on all your devices."))

    def _changed(self, message: str) -> None:
        self.app.say(message, "success")
        self.load()
