"""The screens. Each has its look in ``kv/<name>.kv``; the code here only wires data.

Screens never call the network or the SDK: their ``.kv`` handlers call one method of the
app, and they render the app's properties.
"""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.factory import Factory
from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.screenmanager import Screen

from .widgets import Card

__all__ = [
    "HomeScreen", "PasswordScreen", "RegisterScreen", "SensitiveScreen", "SessionCard",
    "SessionsScreen", "SignInScreen", "SplashScreen",
]


class SplashScreen(Screen):
    """Shown while a stored session is being restored."""


class SignInScreen(Screen):
    """Username, password, "Stay signed in"; the reason the last session ended."""


class RegisterScreen(Screen):
    """Create an account on the demo server."""


class HomeScreen(Screen):
    """Profile, this session and the idle countdown."""


class SessionCard(Card):
    """One live session of the account, with a sign-out button unless it is this one."""

    session_id = StringProperty("")
    device = StringProperty("")
    agent = StringProperty("")
    seen = StringProperty("")
    ip = StringProperty("")
    current = BooleanProperty(False)
    elevated = BooleanProperty(False)


class SessionsScreen(Screen):
    """Every live session of the account."""

    def on_kv_post(self, base_widget: Any) -> None:
        """Follow ``app.sessions``: rebuild the cards when the list changes."""
        app = App.get_running_app()
        app.bind(sessions=lambda _app, rows: self._render(rows))
        self._render(app.sessions)

    def _render(self, rows: list[dict[str, Any]]) -> None:
        box = self.ids.session_list
        box.clear_widgets()
        for row in rows:
            box.add_widget(Factory.SessionCard(**row))


class SensitiveScreen(Screen):
    """A sensitive action behind a step-up password prompt."""


class PasswordScreen(Screen):
    """Change the password; other devices are signed out."""
