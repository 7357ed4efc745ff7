"""Display fields from clients (device names, user agents) are cleaned, not refused."""

from __future__ import annotations

import pytest
from latchkey_server.api.inputs import printable


@pytest.mark.parametrize(("raw", "shown"), [
    ("LatchkeyDemo/1.0 (Android 14; Pixel 8)", "LatchkeyDemo/1.0 (Android 14; Pixel 8)"),
    ("Ada\u2019s Pixel \u2713 \u6771\u4eac", "Ada\u2019s Pixel \u2713 \u6771\u4eac"),
    ("Pixel\r\nX-Injected: 1", "PixelX-Injected: 1"),
    ("tab\there\x00nul\x1bescape\x7fdel", "tabherenulescapedel"),
    ("lone \ud800 surrogate", "lone  surrogate"),
    ("", ""),
])
def test_printable_keeps_what_can_be_shown_and_drops_control_and_surrogates(raw, shown):
    assert printable(raw) == shown
    shown.encode("utf-8")  # always storable
