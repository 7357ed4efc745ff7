"""The demo protected resources: who am I, and (with step-up) a sensitive action."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..guard import current_principal, require_session

__all__ = ["bp"]

bp = Blueprint("account", __name__, url_prefix="/v1/me")


@bp.get("")
@require_session
def me() -> Response:
    """Return the caller's profile; one store round trip in all."""
    p = current_principal()
    return jsonify({"user_id": p.user_id, "username": p.username, "session_id": p.session_id,
                    "auth_level": p.auth_level})
