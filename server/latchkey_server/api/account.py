"""The demo protected resources: who am I, and (with step-up) a sensitive action."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..extension import services
from ..guard import current_principal, require_recent_step_up, require_session

__all__ = ["bp"]

bp = Blueprint("account", __name__, url_prefix="/v1/me")


@bp.get("")
@require_session
def me() -> Response:
    """Return the caller's profile; one store round trip in all."""
    p = current_principal()
    return jsonify({"user_id": p.user_id, "username": p.username, "session_id": p.session_id,
                    "auth_level": p.auth_level})


@bp.post("/sensitive")
@require_session
def sensitive() -> Response:
    """Do the demo sensitive action: only for an elevated session within the step-up window.

    Level and authentication time come from the session in the store, not from the token,
    and the age is measured on the server's clock (L4).
    """
    require_recent_step_up(current_principal(), services().settings.step_up_window_seconds)
    return jsonify({"ok": True})
