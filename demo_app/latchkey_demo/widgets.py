"""Reusable widgets of the demo: cards, buttons, fields, a spinner.

Only behaviour lives here; how each widget looks is in ``kv/theme.kv``.
"""

from __future__ import annotations

from typing import Any

from kivy.clock import Clock
from kivy.properties import BooleanProperty, ColorProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.widget import Widget

__all__ = [
    "AppBar", "Avatar", "BottomNav", "BusySpinner", "Card", "Chip", "DangerButton", "Field",
    "InfoRow", "LockLogo", "NavTab", "Notice", "PrimaryButton",
    "SecondaryButton", "SuccessMark", "TextLink", "ToggleSwitch", "Wrapped",
]


class Card(BoxLayout):
    """A white rounded panel that groups one topic; ``shown`` folds it away."""

    shown = BooleanProperty(True)


class InfoRow(BoxLayout):
    """A "key: value" line inside a card."""

    key = StringProperty("")
    value = StringProperty("")


class Avatar(Label):
    """A round badge with the user's initial."""


class ToggleSwitch(ButtonBehavior, Widget):
    """An on/off switch drawn in the app's palette (Kivy's stock one looks dated)."""

    active = BooleanProperty(False)

    def on_release(self) -> None:
        """Flip the switch."""
        self.active = not self.active


class SuccessMark(Widget):
    """A green circle with a tick: the action went through."""


class Wrapped(Label):
    """A label that wraps to its width and grows to fit its text."""


class Chip(Label):
    """A small rounded tag (this device, elevated)."""

    tone = StringProperty("accent")


class PrimaryButton(Button):
    """The one main action of a screen."""


class SecondaryButton(Button):
    """A quieter action, outlined."""


class DangerButton(Button):
    """An action that signs someone out."""


class TextLink(Button):
    """A link-looking button for navigation between sign-in and registration."""


class Field(BoxLayout):
    """A labelled text input; ``text`` mirrors the input's text."""

    label = StringProperty("")
    hint = StringProperty("")
    text = StringProperty("")
    password = BooleanProperty(False)


class Notice(BoxLayout):
    """The message line bound to ``app.notice``; hidden when empty."""


class AppBar(BoxLayout):
    """Title bar of a signed-in screen, with the logout button every screen must have."""

    title = StringProperty("")


class NavTab(ButtonBehavior, BoxLayout):
    """One tab of the bottom navigation."""

    target = StringProperty("")
    text = StringProperty("")
    glyph = StringProperty("")


class BottomNav(BoxLayout):
    """Tabs for the four signed-in screens."""


class LockLogo(Widget):
    """The Latchkey padlock, drawn with canvas instructions (no image assets to ship)."""


class BusySpinner(Widget):
    """An arc that turns while ``active``: the app is waiting for the network."""

    active = BooleanProperty(False)
    angle = NumericProperty(0)
    color = ColorProperty([1, 1, 1, 1])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._event: Any = None
        self.bind(active=self._on_active)

    def _on_active(self, _w: Any, active: bool) -> None:
        if active and self._event is None:
            self._event = Clock.schedule_interval(self._spin, 1 / 30)
        elif not active and self._event is not None:
            self._event.cancel()
            self._event = None

    def _spin(self, dt: float) -> None:
        self.angle = (self.angle + 360 * dt) % 360
