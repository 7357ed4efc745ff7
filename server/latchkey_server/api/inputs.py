"""Read untrusted request input into checked values, or raise ``InvalidRequest``."""

from __future__ import annotations

from typing import Any

from flask import request

from ..errors import InvalidRequest

__all__ = ["client_ip", "json_body", "optional_str", "printable", "required_str", "user_agent"]

MAX_DEVICE_FIELD = 128
MAX_USER_AGENT = 256


def json_body(required: bool = True) -> dict[str, Any]:
    """Return the request's JSON object; an empty body is ``{}`` when not required."""
    if not request.content_length and not request.headers.get("Transfer-Encoding"):
        if required:
            raise InvalidRequest("A JSON object body is required")
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object")
    return data


def required_str(body: dict[str, Any], name: str, *, max_length: int = 1024) -> str:
    """Return a required string field, checked for type and length."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string", extra={"field": name})
    if len(value) > max_length:
        raise InvalidRequest(f"'{name}' is too long", extra={"field": name})
    return value


def printable(value: str) -> str:
    """Return ``value`` without control characters or lone surrogates.

    Display fields (device names, user agents) end up in lists, logs and UIs; dropping
    what cannot be shown is kinder than refusing a sign-in over a device's odd name, and
    a lone surrogate could not even be stored as UTF-8.
    """
    if value.isprintable():  # the common case, checked in C: no control or surrogate
        return value
    text = value.encode("utf-8", "ignore").decode("utf-8")
    return "".join(ch for ch in text if ch.isprintable())


def optional_str(body: dict[str, Any], name: str, *, max_length: int = MAX_DEVICE_FIELD) -> str:
    """Return an optional display string field, cleaned ('' when absent)."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidRequest(
            f"'{name}' must be a string of at most {max_length} characters",
            extra={"field": name},
        )
    return printable(value)


def user_agent() -> str:
    """Return the client's User-Agent, bounded and printable."""
    return printable(request.headers.get("User-Agent", "")[:MAX_USER_AGENT])


def client_ip() -> str:
    """Return the client address (ProxyFix has applied trusted X-Forwarded-For)."""
    return request.remote_addr or ""
