"""The idle warning: a countdown and "Stay signed in" before the automatic sign-out."""

from __future__ import annotations

from typing import Any

from kivy.properties import NumericProperty, StringProperty
from kivy.uix.modalview import ModalView

from ..wording import format_countdown

__all__ = ["IdleWarningPopup"]

#: How far above the warning threshold the timer must be before the popup closes itself:
#: the SDK's timer and the UI's tick are a frame apart, and a popup flickering shut at the
#: threshold would be worse than one that stays half a second longer.
_CLOSE_MARGIN_SECONDS = 0.5


class IdleWarningPopup(ModalView):
    """Warn before the idle sign-out; close by itself once the user is active again."""

    #: The idle seconds left, as the countdown shows them.
    countdown = StringProperty("")
    #: How long before the sign-out the SDK warns (the popup's own threshold).
    warning_seconds = NumericProperty(0.0)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("auto_dismiss", False)
        super().__init__(**kwargs)

    def show_left(self, seconds_left: float | None) -> bool:
        """Show the countdown; return ``False`` once the user is no longer idle."""
        self.countdown = format_countdown(seconds_left)
        return not (seconds_left is not None and self.warning_seconds
                    and seconds_left > self.warning_seconds + _CLOSE_MARGIN_SECONDS)
