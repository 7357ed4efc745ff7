"""Manage a user's sessions: logout scopes, the session list, remote sign-out (L1), and the
authentication-state changes that replace the caller's session: step-up and password
change (L4).

Every operation that touches more than one session is one Lua script in the user's
cluster slot (``store.py``), so no request ever sees a half-ended set of sessions. Ending a
session marks it, so every token it issued, access tokens included, is refused on the very
next request with ``session_revoked`` and the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from .. import throttle
from ..binding import request_device_id
from ..errors import InvalidCredentials, InvalidRequest, NotFound, WeakPassword
from ..extension import Services, services
from ..guard import Principal, current_principal, require_session
from ..passwords import PasswordPolicy
from ..store import SessionInfo
from ..tokens import parse_session_id
from .auth import issue_session
from .inputs import json_body, required_str

__all__ = ["LOGOUT_SCOPES", "bp", "rfc3339"]

bp = Blueprint("sessions", __name__, url_prefix="/v1/auth")

LOGOUT_SCOPES = ("all", "others")


def rfc3339(ms: int) -> str:
    """Format a Redis-time millisecond timestamp as an RFC 3339 UTC string."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def session_json(info: SessionInfo, current_session_id: str = "") -> dict[str, object]:
    """Return one entry of the session list (API.md); the device id is never shown."""
    return {
        "session_id": info.session_id,
        "device_name": info.device_name,
        "user_agent": info.user_agent,
        "ip": info.ip,
        "created_at": rfc3339(info.created_ms),
        "last_seen_at": rfc3339(info.last_seen_ms),
        "expires_at": rfc3339(info.expires_ms),
        "auth_level": info.auth_level,
        "current": info.session_id == current_session_id,
    }


def log_ended(svc: Services, user_id: str, ended: list[tuple[str, str]],
              current_session_id: str = "") -> None:
    """Write one life-cycle event per session a store script ended."""
    for session_id, reason in ended:
        if reason in ("idle", "absolute"):
            svc.events.lifecycle("session_expired", session_id=session_id, user_id=user_id,
                                 reason=reason)
        elif session_id == current_session_id:
            svc.events.lifecycle("session_logged_out", session_id=session_id, user_id=user_id)
        else:
            svc.events.lifecycle("session_revoked", session_id=session_id, user_id=user_id,
                                 reason=reason)


@bp.post("/logout-all")
@require_session
def logout_all() -> tuple[str, int]:
    """End every session of the user (``all``, the default) or every other one (L1)."""
    svc, p = services(), current_principal()
    scope = json_body(required=False).get("scope", "all")
    if scope not in LOGOUT_SCOPES:
        raise InvalidRequest("'scope' must be 'all' or 'others'", extra={"field": "scope"})
    # One script: the caller's session ends as 'logout', the others as 'remote'.
    ended = svc.store.end_sessions(p.user_id, current_session_id=p.session_id, scope=scope,
                                   current_reason="logout", others_reason="remote")
    log_ended(svc, p.user_id, ended, p.session_id)
    return "", 204


@bp.get("/sessions")
@require_session
def list_sessions() -> Response:
    """List the caller's live sessions, oldest first, marking the current one (L1)."""
    svc, p = services(), current_principal()
    sessions = svc.store.list_sessions(p.user_id)
    return jsonify({"sessions": [session_json(s, p.session_id) for s in sessions]})


@bp.delete("/sessions/<session_id>")
@require_session
def end_one_session(session_id: str) -> tuple[str, int]:
    """End one of the caller's live sessions (remote sign-out, L1).

    Session keys live under the caller's own user id, so another user's session id names
    no key at all: it answers 404 exactly like an unknown or already-ended one.
    """
    svc, p = services(), current_principal()
    # Untrusted input: check the shape before the store sees it (T3).
    sid = parse_session_id(session_id)
    if sid is None:
        raise NotFound("No live session with that id")
    reason = "logout" if sid == p.session_id else "remote"
    if svc.store.revoke_session(p.user_id, sid, reason) != "revoked":
        raise NotFound("No live session with that id")
    log_ended(svc, p.user_id, [(sid, reason)], p.session_id)
    return "", 204


def _verify_password(svc: Services, p: Principal, password: str) -> dict[str, str]:
    """Check the caller's password; return the user record it was checked against."""
    user = svc.store.get_user(p.user_id)
    if not svc.passwords.verify(user.get("p"), password):
        raise InvalidCredentials("The password is not correct")
    return user


def _device_id(p: Principal) -> str:
    """Return the device id for the session that replaces the caller's.

    Its device name needs no lookup: the store's script carries it over from the session
    it replaces.
    """
    return request_device_id() or p.device_id


@bp.post("/reauth")
@throttle.limited(throttle.STEP_UP_FAILURES, throttle.STEP_UP_IP_FAILURES)
@require_session
def reauth() -> Response:
    """Step up: prove the password again; get a new, elevated session (L4).

    The old session is ended (reason ``step_up``) in the same script that creates the new
    one, and the new one starts a new absolute window: this is a full re-authentication.
    """
    svc, p = services(), current_principal()
    password = required_str(json_body(), "password", max_length=4096)
    _verify_password(svc, p, password)
    return issue_session(svc, user_id=p.user_id, auth_level="elevated",
                         device_id=_device_id(p), device_name="", replaces=p.session_id,
                         replaced_reason="step_up")


# The endpoint name is part of its per-IP counter's key (throttle.py): keep it.
@bp.post("/password", endpoint="password")
@throttle.limited(throttle.STEP_UP_FAILURES, throttle.STEP_UP_IP_FAILURES)
@require_session
def change_password() -> Response:
    """Change the password; end every other session; re-issue the caller's (L4).

    The new hash is stored, the caller's session replaced and all others ended in one
    script, and only if the stored hash is still the one just verified.
    """
    svc, p = services(), current_principal()
    body = json_body()
    current = required_str(body, "current_password", max_length=4096)
    new = required_str(body, "new_password", max_length=4096)
    user = _verify_password(svc, p, current)
    weakness = PasswordPolicy.weakness(new, user.get("n", ""))
    if weakness is None and new == current:
        weakness = "Choose a password different from the current one"
    if weakness:
        raise WeakPassword(weakness, extra={"field": "new_password"})
    response = issue_session(
        svc, user_id=p.user_id, auth_level="normal", device_id=_device_id(p),
        device_name="", replaces=p.session_id, replaced_reason="password_change",
        end_others_reason="password_change", new_password_hash=svc.passwords.hash(new),
        verified_password_hash=user["p"],
    )
    svc.events.lifecycle("password_changed", user_id=p.user_id)
    return response
