"""Read what a request says about its device, for binding a session to it (D3): the pure part.

A session remembers the device id (``X-Device-Id``) and the User-Agent of the login that
created it; every protected request is compared with them by ``apply_binding`` in
``lua/_prelude.lua``. This module turns a request's headers into those inputs and their
fingerprint, the same way on the token server (``latchkey_server.binding`` imports it)
and on a resource server, so a phone is the same device to both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DEVICE_ID_HEADER",
    "DEVICE_ID_PATTERN",
    "DEVICE_ID_RE",
    "MAX_DEVICE_FIELD",
    "MAX_USER_AGENT",
    "Client",
    "client_from_headers",
    "header",
    "printable",
    "valid_device_id",
]

DEVICE_ID_HEADER = "X-Device-Id"
MAX_DEVICE_FIELD = 128
MAX_USER_AGENT = 256
# Printable ASCII: a header value is an identifier, not display text. No space at either
# end: no header can carry one (RFC 9110 5.5: servers strip it, h11 refuses to send it), so
# such an id could never match its session again.
DEVICE_ID_PATTERN = rf"^(?:[!-~](?:[ -~]{{0,{MAX_DEVICE_FIELD - 2}}}[!-~])?)?$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Client:
    """What a request says about its client: the values a session is bound to (D3) and
    its address (for security events and the session list)."""

    device_id: str = ""
    user_agent: str = ""
    ip: str = ""

    @property
    def fingerprint(self) -> str:
        """Return a short digest of the bound values: what ``report`` remembers per session."""
        return _fingerprint(self.device_id, self.user_agent)


@lru_cache(maxsize=1024)
def _fingerprint(device_id: str, user_agent: str) -> str:
    # Cached: a service sees the same few (device, app version) pairs on every request.
    return hashlib.sha256(f"{device_id}\n{user_agent}".encode()).hexdigest()[:32]


# Header mappings whose ``get`` ignores case already (werkzeug's, Starlette's), by class
# name so this light package imports neither framework. For them an absent header is
# absent: no scan of every header (werkzeug's EnvironHeaders rebuilds each one from the
# environ as it iterates: ~20 µs a request that sends no X-Device-Id).
_CASE_INSENSITIVE = frozenset({
    "werkzeug.datastructures.headers.Headers",
    "werkzeug.datastructures.headers.EnvironHeaders",
    "starlette.datastructures.Headers",
    "starlette.datastructures.MutableHeaders",
})


@lru_cache(maxsize=64)
def _ignores_case(cls: type) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in _CASE_INSENSITIVE for c in cls.__mro__)


def printable(value: str) -> str:
    """Return ``value`` without control characters or lone surrogates.

    Display fields (device names, user agents) end up in lists, logs and UIs; dropping
    what cannot be shown is kinder than refusing a request over a device's odd name, and
    a lone surrogate could not even be stored as UTF-8.
    """
    if value.isprintable():  # the common case, checked in C: no control or surrogate
        return value
    text = value.encode("utf-8", "ignore").decode("utf-8")
    return "".join(ch for ch in text if ch.isprintable())


def valid_device_id(value: str) -> bool:
    """Say whether a device id is one a header can carry (printable ASCII, bounded)."""
    return DEVICE_ID_RE.fullmatch(value) is not None


def header(headers: Mapping[str, str], name: str) -> str:
    """Return one header of a mapping whose keys may be in any case ('' when absent)."""
    value = headers.get(name)
    if value is not None:
        return value
    if _ignores_case(type(headers)):
        return ""
    value = headers.get(name.lower())
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), "")
    return value


def client_from_headers(headers: Mapping[str, str], ip: str = "") -> Client | None:
    """Return a request's binding inputs, or ``None`` if its device id is malformed.

    The user agent is cut and cleaned as the token server cuts it at login, so the same
    phone gives the same values to both.
    """
    device_id = header(headers, DEVICE_ID_HEADER)
    if not valid_device_id(device_id):
        return None
    return Client(device_id=device_id,
                  user_agent=printable(header(headers, "User-Agent")[:MAX_USER_AGENT]), ip=ip)
