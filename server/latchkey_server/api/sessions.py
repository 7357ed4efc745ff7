"""Manage a user's sessions: logout scopes, the session list, remote sign-out (L1), and the
authentication-state changes that replace the caller's session: step-up and password
change (L4).

Every operation goes through the session service (``sessions.py``); one that touches more
than one session is one Lua script in the user's cluster slot (``store.py``), so no
request ever sees a half-ended set of sessions. Ending a session marks it, so every
token it issued, access tokens included, is refused on the very next request with
``session_revoked`` and the reason.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import throttle
from ..binding import request_client, request_device_id
from ..errors import InvalidCredentials, InvalidRequest, NotFound, WeakPassword
from ..extension import Services, services
from ..guard import current_principal, require_session
from ..passwords import PasswordPolicy
from ..serialise import session_json, token_json
from ..sessions import Client, Principal
from ..store import Revocation
from ..tokens import parse_session_id
from .auth import dpop_binding
from .inputs import json_body, required_str

__all__ = ["LOGOUT_SCOPES", "bp"]

bp = Blueprint("sessions", __name__, url_prefix="/v1/auth")

LOGOUT_SCOPES = ("all", "others")


@bp.post("/logout-all")
@require_session
def logout_all() -> tuple[str, int]:
    """End every session of the user (``all``, the default) or every other one (L1)."""
    svc, p = services(), current_principal()
    scope = json_body(required=False).get("scope", "all")
    if scope not in LOGOUT_SCOPES:
        raise InvalidRequest("'scope' must be 'all' or 'others'", extra={"field": "scope"})
    # One script: the caller's session ends as 'logout', the others as 'remote'.
    svc.sessions.end_all(p.user_id, scope=scope, current_session_id=p.session_id,
                         current_reason="logout", others_reason="remote")
    return "", 204


@bp.get("/sessions")
@require_session
def list_sessions() -> Response:
    """List the caller's live sessions, oldest first, marking the current one (L1)."""
    svc, p = services(), current_principal()
    sessions = svc.sessions.sessions_of(p.user_id)
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
    if svc.sessions.revoke(p.user_id, sid, reason) is not Revocation.REVOKED:
        raise NotFound("No live session with that id")
    return "", 204


def _verify_password(svc: Services, p: Principal, password: str) -> dict[str, str]:
    """Check the caller's password; return the user record it was checked against."""
    user = svc.store.get_user(p.user_id)
    if not svc.passwords.verify(user.get("p"), password):
        raise InvalidCredentials("The password is not correct")
    return user


def _replacing_client(p: Principal) -> Client:
    """Return the client of the session that replaces the caller's: this request's device
    id, or the replaced session's if the request sends none.

    Its device name needs no lookup: the store's script carries it over from the session
    it replaces.
    """
    return request_client(request_device_id() or p.device_id)


def _carried_binding(svc: Services, p: Principal) -> dict[str, str]:
    """Return the DPoP key the replacing session is bound to: the caller's session's, whose
    proof the guard has checked (and used up); an unbound session's request may bind its
    successor with a proof of its own, as a login does (under ``required`` it must)."""
    if p.jkt:
        return {"dpop_jkt": p.jkt}
    return dpop_binding(svc.dpop.token_request())


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
    grant = svc.sessions.issue(user_id=p.user_id, auth_level="elevated",
                               client=_replacing_client(p), replaces=p.session_id,
                               replaced_reason="step_up", **_carried_binding(svc, p))
    return jsonify(token_json(grant))


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
    grant = svc.sessions.issue(
        user_id=p.user_id, auth_level="normal", client=_replacing_client(p),
        replaces=p.session_id, replaced_reason="password_change",
        end_others_reason="password_change", new_password_hash=svc.passwords.hash(new),
        verified_password_hash=user["p"], **_carried_binding(svc, p),
    )
    return jsonify(token_json(grant))
