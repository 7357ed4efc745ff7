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


# -- H1: form bodies (the OAuth endpoints) share the JSON bodies' limits ---------------------
def _form(app, body: bytes, **headers: str):
    from latchkey_server.api.inputs import form_body

    with app.test_request_context("/", method="POST", data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", **headers}):
        return form_body()


def test_form_bodies_get_the_same_limits_and_refuse_repeated_names(app):
    from latchkey_server.errors import InvalidRequest, PayloadTooLarge

    assert _form(app, b"grant_type=refresh_token&scope=") == {
        "grant_type": "refresh_token", "scope": ""}
    assert _form(app, b"") == {}
    for hostile in (b"a=1&a=2", b"a=%ff", b"a=\xff", b"a=%ed%a0%80", b"&&=", b"x" * 10):
        with pytest.raises(InvalidRequest):
            _form(app, hostile)
    with pytest.raises(InvalidRequest):
        _form(app, b"&".join(b"f%d=1" % i for i in range(100)))
    with pytest.raises(PayloadTooLarge):
        _form(app, b"a=" + b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1))
