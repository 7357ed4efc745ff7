"""Protect a view with a live server-side session: one decorator, one store round trip.

extract the token -> verify it (signature cached, algorithm pinned) -> a DPoP-bound token
(``cnf.jkt``) needs ``Authorization: DPoP`` and a proof by that key with ``ath`` (RFC 9449
section 7; sent as Bearer, or without the key, it is refused and reported as stolen) ->
the session service (``sessions.py``) runs one Lua script that checks the session is live
on server time, applies the device-binding policy (D3), uses up the proof's ``jti`` and
touches its idle clock -> put the identity on ``g``. A token whose signature is ours but
whose session the store does not know is refused and reported as suspicious (T2).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from .binding import request_client
from .errors import InvalidDPoPProof, InvalidToken, StepUpRequired
from .extension import services
from .sessions import Principal

__all__ = ["Principal", "bearer_token", "current_principal", "presented_token",
           "require_recent_step_up", "require_session"]

F = TypeVar("F", bound=Callable[..., Any])


def presented_token() -> tuple[str, str]:
    """Return this request's (scheme, access token), scheme ``bearer`` or ``dpop`` (the
    latter only while DPoP is on), or raise ``InvalidToken``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "dpop" and value and services().dpop.enabled:
        g.dpop_presented = True
    elif scheme != "bearer" or not value:
        raise InvalidToken("Send the access token as Authorization: Bearer (or DPoP)")
    g.bearer_presented = True
    return scheme, value


def bearer_token() -> str:
    """Return the access token of this request, in either scheme, for a call that needs
    no proof of possession (ending a session is always the safe direction)."""
    return presented_token()[1]


def authenticate() -> Principal:
    """Run the whole check for the current request and return the principal."""
    svc = services()
    scheme, token = presented_token()
    claims = svc.tokens.verify_access_token(token)
    client = request_client()
    jti = ""
    if claims.jkt and svc.dpop.enabled:
        # RFC 9449 section 7.2: a bound token sent as Bearer is refused; P1: reported.
        if scheme != "dpop":
            raise svc.sessions.refuse_unproven(claims, client, "bearer")
        if not request.headers.getlist("DPoP"):
            raise svc.sessions.refuse_unproven(claims, client, "no_proof")
        proof = svc.dpop.resource_request(token)
        # Section 7.1 step 12 (with ath checked): the proof's key is the token's.
        if proof.jkt != claims.jkt:
            raise svc.sessions.refuse_unproven(claims, client, "other_key")
        jti = proof.jti
    elif scheme == "dpop":
        # Section 7.1: the DPoP scheme is for DPoP-bound tokens only.
        raise InvalidDPoPProof("This access token is not DPoP-bound: send it as Bearer",
                               resource=True)
    return svc.sessions.verify(claims, client, dpop_jti=jti)


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
