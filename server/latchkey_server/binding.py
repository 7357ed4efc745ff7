"""Read what a request says about its device, for binding a session to it (D3).

A session remembers the device id and the User-Agent of the login that created it. Every
protected request and every refresh is compared with them: the device id comes from the
``X-Device-Id`` header (clients send it on every request, and as ``device_id`` in the login
body), the user agent from ``User-Agent``. What a difference does is ``BINDING_POLICY``:

- ``off``: nothing.
- ``report``: one ``binding_changed`` security event per session and changed fingerprint
  (the store remembers what it reported, so a moved phone does not flood the stream).
- ``enforce``: the event, and the session is ended with reason ``binding``: the request
  gets 401 ``session_revoked``, and so does every other token of that session.

The policy is decided in one place, ``apply_binding`` in ``lua/_prelude.lua``, inside the
one script each path already runs (``verify_touch.lua``, ``rotate_refresh.lua``); the
session service (``sessions.py``) raises the events. This module only reads the request;
the header's name and shape, and the bound values' fingerprint, are
``latchkey_resource.binding``'s, so a resource server reads a request the same way.

Both values are client-supplied, so binding cannot stop a thief who copies them; it stops
a token replayed from another client or tool, and makes the copy visible.
"""

from __future__ import annotations

from typing import Any

from flask import request
from latchkey_resource.binding import (
    DEVICE_ID_HEADER,
    DEVICE_ID_PATTERN,
    DEVICE_ID_RE,
    MAX_DEVICE_FIELD,
    Client,
)

from .api.inputs import client_ip, user_agent
from .errors import InvalidRequest, UnprocessableRequest

__all__ = [
    "DEVICE_ID_HEADER",
    "DEVICE_ID_PATTERN",
    "login_device_id",
    "request_client",
    "request_device_id",
]

# DEVICE_ID_PATTERN (printable ASCII, no space at either end, bounded) is
# latchkey_resource.binding's; openapi.py publishes it, so the document, the token server
# and resource servers agree on what is valid.


def request_device_id() -> str:
    """Return this request's ``X-Device-Id`` ('' when absent), checked like body fields."""
    value = request.headers.get(DEVICE_ID_HEADER, "")
    if not DEVICE_ID_RE.fullmatch(value):
        raise InvalidRequest(f"{DEVICE_ID_HEADER} must be printable ASCII, at most "
                             f"{MAX_DEVICE_FIELD} characters")
    return value


def login_device_id(body: dict[str, Any]) -> str | None:
    """Return the login body's ``device_id`` (``None`` when absent or empty), or refuse it.

    The same rule as the header: the id a session is bound to at login is the one the
    client must send as ``X-Device-Id`` afterwards, so one the header cannot carry (Unicode,
    control characters) would make every later request look like another device.
    """
    value = body.get("device_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not DEVICE_ID_RE.fullmatch(value):
        raise UnprocessableRequest(
            f"'device_id' must be printable ASCII, at most {MAX_DEVICE_FIELD} characters",
            extra={"field": "device_id"})
    return value


def request_client(device_id: str | None = None) -> Client:
    """Return what this request says about its client, for the session service.

    ``device_id`` overrides the header (a login body's ``device_id``, or the session's own
    when a replacing session is issued); the header is then not read at all.
    """
    if device_id is None:
        device_id = request_device_id()
    return Client(device_id=device_id, user_agent=user_agent(), ip=client_ip())
