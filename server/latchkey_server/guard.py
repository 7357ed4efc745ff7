"""Protect a view with a live server-side session: one decorator, one store round trip.

extract the bearer token -> verify it (signature cached, algorithm pinned) -> the session
service (``sessions.py``) runs one Lua script that checks the session is live on server
time, applies the device-binding policy (D3) and touches its idle clock -> put the
identity on ``g``. A token whose signature is ours but whose session the store does not
know is refused and reported as suspicious (T2).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from .binding import request_client
from .errors import InvalidToken, StepUpRequired
from .extension import services
from .sessions import Principal

__all__ = ["Principal", "bearer_token", "current_principal", "require_recent_step_up",
           "require_session"]

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token() -> str:
    """Return the bearer token of this request or raise ``InvalidToken``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidToken("Send the access token as Authorization: Bearer")
    g.bearer_presented = True
    return value.strip()


def authenticate() -> Principal:
    """Run the whole check for the current request and return the principal."""
    svc = services()
    claims = svc.tokens.verify_access_token(bearer_token())
    return svc.sessions.verify(claims, request_client())


def require_session(view: F) -> F:
    """Decorate a view so it runs only for a live session; the principal is on ``g``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.principal = authenticate()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def current_principal() -> Principal:
    """Return the principal ``require_session`` put on ``g``."""
    principal: Principal = g.principal  # what require_session stored
    return principal


def require_recent_step_up(principal: Principal, window_seconds: int) -> None:
    """Raise ``StepUpRequired`` unless the session was elevated within the window (L4).

    Level and authentication time come from the session in the store, never from the
    token, and the age is measured on the server's clock.
    """
    if principal.auth_level != "elevated" or time.time() - principal.auth_time > window_seconds:
        raise StepUpRequired(f"Re-authenticate (POST /v1/auth/reauth) within "
                             f"{window_seconds} s before this action")
