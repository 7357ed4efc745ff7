"""Read untrusted request input into checked values, or raise ``InvalidRequest``."""

from __future__ import annotations

from typing import Any

from flask import request

from ..errors import InvalidRequest

__all__ = ["client_ip", "json_body", "optional_str", "required_str", "user_agent"]

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


def optional_str(body: dict[str, Any], name: str, *, max_length: int = MAX_DEVICE_FIELD) -> str:
    """Return an optional printable string field ('' when absent)."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length or not value.isprintable():
        raise InvalidRequest(
            f"'{name}' must be a printable string of at most {max_length} characters",
            extra={"field": name},
        )
    return value


def user_agent() -> str:
    """Return the client's User-Agent, bounded and printable."""
    ua = request.headers.get("User-Agent", "")[:MAX_USER_AGENT]
    return "".join(ch for ch in ua if ch.isprintable())


def client_ip() -> str:
    """Return the client address (ProxyFix has applied trusted X-Forwarded-For)."""
    return request.remote_addr or ""
