"""The sensitive action: the server asks for the password again (step-up), then it succeeds."""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty
from latchkey_client import StepUpRequiredError

from .base import FlowScreen

__all__ = ["SensitiveScreen"]


class SensitiveScreen(FlowScreen):
    """A sensitive action behind a step-up password prompt."""

    #: The server answered ``step_up_required``: the password prompt is showing.
    step_up_prompt = BooleanProperty(False)
    done = BooleanProperty(False)
    #: Fingerprints of the session id before and after the step-up (it must change).
    before = StringProperty("")
    after = StringProperty("")

    def reset(self) -> None:
        """Close the prompt and forget the last outcome."""
        self.step_up_prompt = False
        self.done = False
        self.before = ""
        self.after = ""

    def opened(self) -> None:
        """Start from the intro card each time."""
        self.step_up_prompt = False
        self.done = False

    def start(self) -> None:
        """Try the sensitive action; the server asks for a fresh password first."""
        client = self.app.client
        self.done = False
        self.app.run(lambda: client.post("/v1/me/sensitive", json={}).json(), "Checking…",
                     self._succeeded, on_error=self._refused)

    def confirm(self, password: str) -> None:
        """Re-authenticate with the password (new session id), then do the action."""
        if not password:
            self.app.say("Enter your password.", "error")
            return
        client = self.app.client

        def job() -> dict[str, Any]:
            client.reauthenticate(password=password)
            return client.post("/v1/me/sensitive", json={}).json()

        self.app.run(job, "Confirming…", self._succeeded)

    def cancel(self) -> None:
        """Close the password prompt without doing anything."""
        self.step_up_prompt = False
        self.app.say("", "info")

    def _refused(self, error: BaseException) -> None:
        if not isinstance(error, StepUpRequiredError):
            self.app.show_error(error)
            return
        self.before = self.app.session_fingerprint
        self.step_up_prompt = True
        self.app.say("Confirm your password to continue.", "info")

    def _succeeded(self, _result: dict[str, Any]) -> None:
        self.app.update_session_facts()
        if not self.before:
            self.before = self.app.session_fingerprint
        self.after = self.app.session_fingerprint
        self.step_up_prompt = False
        self.done = True
        self.app.say("Sensitive action completed.", "success")
