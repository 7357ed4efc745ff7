"""Sign in, create an account, and the splash shown while a stored session is restored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.screenmanager import Screen

from .base import FlowScreen

if TYPE_CHECKING:
    from ..platform_setup import DemoPlatform

__all__ = ["RegisterScreen", "SignInScreen", "SplashScreen"]


class SplashScreen(Screen):
    """Shown while a stored session is being restored (the App's ``on_start``)."""


class SignInScreen(FlowScreen):
    """Username, password, "Stay signed in"; the reason the last session ended."""

    #: Whether "Stay signed in" can be offered (a secure store exists on this device).
    secure_storage_available = BooleanProperty(True)
    storage_note = StringProperty("")
    server_url = StringProperty("")
    #: Why the last session ended, as a :class:`~latchkey_client.SignOutReason` value.
    signed_out_reason = StringProperty("")

    def reset(self) -> None:
        """Forget why the last session ended (a new one began, or another reason follows)."""
        self.signed_out_reason = ""

    def describe_platform(self, platform: DemoPlatform) -> None:
        """Show which server this is and whether "Stay signed in" is on offer, and why."""
        self.server_url = platform.settings.server_url
        self.secure_storage_available = platform.secure_storage_available
        self.storage_note = platform.storage_note

    def sign_in(self, username: str, password: str, stay_signed_in: bool) -> None:
        """Sign in with a password; "stay signed in" decides if the refresh token persists."""
        app = self.app
        name = username.strip()
        if not name or not password:
            app.say("Enter your username and password.", "error")
            return
        client = app.new_client(stay_signed_in=bool(stay_signed_in
                                                    and self.secure_storage_available))
        app.run(lambda: client.login(username=name, password=password), "Signing in…",
                lambda _info: app.enter_signed_in("Signed in."), needs_session=False)


class RegisterScreen(FlowScreen):
    """Create an account on the demo server, then sign straight in with it."""

    def register(self, username: str, password: str, confirm: str) -> None:
        """Create the account, then sign in with it (not staying signed in)."""
        app = self.app
        if password != confirm:
            app.say("The two passwords don't match.", "error")
            return
        name = username.strip()
        if not name:
            app.say("Choose a username.", "error")
            return
        client = app.new_client(stay_signed_in=False)

        def job() -> object:
            client.register(username=name, password=password)
            return client.login(username=name, password=password)

        app.run(job, "Creating your account…",
                lambda _info: app.enter_signed_in("Signed in."), needs_session=False)
