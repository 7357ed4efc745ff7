"""Change the password: every other device is signed out, this one gets a new session."""

from __future__ import annotations

from kivy.properties import BooleanProperty, NumericProperty, StringProperty

from .base import FlowScreen

__all__ = ["PasswordScreen"]


class PasswordScreen(FlowScreen):
    """Change the password and show how many other devices it signed out."""

    done = BooleanProperty(False)
    signed_out_count = NumericProperty(0)
    #: Fingerprints of the session id before and after the change (it must change).
    before = StringProperty("")
    after = StringProperty("")

    def reset(self) -> None:
        """Show the form again."""
        self.done = False

    def opened(self) -> None:
        """Show the form again."""
        self.done = False

    def change(self, current: str, new: str, confirm: str) -> None:
        """Change the password; the server signs out every other device."""
        app = self.app
        if new != confirm:
            app.say("The new passwords don't match.", "error")
            return
        if not current or not new:
            app.say("Fill in your current and your new password.", "error")
            return
        client = app.client
        before = app.session_fingerprint

        def job() -> tuple[int, int]:
            others_before = sum(1 for s in client.sessions() if not s.current)
            client.change_password(current_password=current, new_password=new)
            others_after = sum(1 for s in client.sessions() if not s.current)
            return others_before, others_after

        def done(counts: tuple[int, int]) -> None:
            app.update_session_facts()
            self.before = before
            self.after = app.session_fingerprint
            self.signed_out_count = counts[0] - counts[1]
            self.done = True
            app.say("Password changed.", "success")

        self.done = False
        app.run(job, "Changing password…", done)
