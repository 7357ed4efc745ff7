"""The administrative view of other users' sessions over HTTP (D5).

Protected twice: the caller's account must have the ``admin`` role (set with
``latchkey-server users create --role admin``), and the caller's session must have
stepped up (``POST /v1/auth/reauth``) within ``STEP_UP_WINDOW``. Every call, allowed or
refused, is audited as an ``admin_action`` security event. A non-admin gets 404, as if the
endpoint did not exist, so the admin surface is not advertised to ordinary accounts.

The target user is named by ``username`` in the query or body, never in the path, so it
stays out of access logs (they keep query names only, not values).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..errors import InvalidRequest, NotFound, StepUpRequired
from ..extension import Services, services
from ..guard import Principal, current_principal, require_recent_step_up, require_session
from ..passwords import USERNAME_RE
from ..serialise import session_json
from ..store import Revocation
from ..tokens import parse_session_id
from .inputs import client_ip, json_body, optional_str

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


def _audit(svc: Services, p: Principal, action: str, outcome: str, **fields: object) -> None:
    svc.events.security("admin_action", action=action, outcome=outcome, via="http",
                        actor_ref=svc.events.user_ref(p.user_id), ip=client_ip(), **fields)


def _authorise(svc: Services, action: str) -> Principal:
    """Let only an admin with a recent step-up through; audit refusals too."""
    p = current_principal()
    if svc.store.get_user(p.user_id).get("role") != "admin":
        _audit(svc, p, action, "denied_role")
        raise NotFound()
    try:
        require_recent_step_up(p, svc.settings.step_up_window_seconds)
    except StepUpRequired:
        _audit(svc, p, action, "denied_step_up")
        raise
    return p


def _target(svc: Services, username: object) -> str:
    """Return the user id of the target username; 404 if there is none."""
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise InvalidRequest("'username' must be a valid username", extra={"field": "username"})
    user_id = svc.store.user_id_for(username)
    if not user_id:
        raise NotFound("No such user")
    return user_id


@bp.get("/sessions")
@require_session
def list_user_sessions() -> Response:
    """List one user's live sessions (``?username=``)."""
    svc = services()
    p = _authorise(svc, "sessions_list")
    user_id = _target(svc, request.args.get("username"))
    sessions = [session_json(s, p.session_id) for s in svc.sessions.sessions_of(user_id)]
    _audit(svc, p, "sessions_list", "ok", user_id=user_id, count=len(sessions))
    return jsonify({"user_id": user_id, "sessions": sessions})


@bp.post("/sessions/revoke")
@require_session
def revoke_user_sessions() -> tuple[str, int]:
    """End one session (``session_id``) or every session of a user, reason ``admin``."""
    svc = services()
    p = _authorise(svc, "sessions_revoke")
    body = json_body()
    user_id = _target(svc, body.get("username"))
    raw_session_id = optional_str(body, "session_id", max_length=64)
    if not raw_session_id:
        ended = svc.sessions.end_all(user_id, scope="all", current_reason="admin",
                                     others_reason="admin")
        _audit(svc, p, "sessions_revoke_all", "ok", user_id=user_id,
               count=sum(1 for e in ended if e.reason == "admin"))
        return "", 204
    session_id = parse_session_id(raw_session_id)
    outcome = (svc.sessions.revoke(user_id, session_id, "admin") if session_id
               else Revocation.UNKNOWN)
    _audit(svc, p, "sessions_revoke", outcome.value, user_id=user_id, session_id=session_id)
    if outcome is not Revocation.REVOKED:
        raise NotFound("No live session with that id")
    return "", 204
