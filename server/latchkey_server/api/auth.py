"""Sign in, refresh and sign out: the session life cycle's HTTP face (L1, L3, L4, T1-T5).

Each view parses the request, calls the session service (``sessions.py``), which makes
every decision and writes every event, and answers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from latchkey_resource.dpop import Proof

from .. import throttle
from ..binding import login_device_id, request_client
from ..errors import (
    InvalidCredentials,
    RegistrationDisabled,
    UnprocessableRequest,
    WeakPassword,
)
from ..extension import Services, services
from ..guard import bearer_token
from ..passwords import USERNAME_RE, PasswordPolicy
from ..serialise import token_json
from ..tokens import RefreshToken
from .inputs import json_body, optional_str, required_str

__all__ = ["bp", "dpop_binding"]

bp = Blueprint("auth", __name__, url_prefix="/v1/auth")


@bp.post("/register")
@throttle.limited(throttle.TAKEN_NAME_FAILURES, throttle.REGISTRATION_IP_FAILURES)
def register() -> tuple[Response, int]:
    """Create an account (when registration is enabled)."""
    svc = services()
    if not svc.settings.allow_registration:
        raise RegistrationDisabled()
    body = json_body()
    username = required_str(body, "username", max_length=64)
    password = required_str(body, "password", max_length=4096)
    if not USERNAME_RE.fullmatch(username):
        raise UnprocessableRequest(
            "Usernames are 3-64 letters, digits or ._@-", extra={"field": "username"}
        )
    weakness = PasswordPolicy.weakness(password, username)
    if weakness:
        raise WeakPassword(weakness)
    user_id = svc.sessions.register(username, svc.passwords.hash(password))
    return jsonify({"user_id": user_id}), 201


@bp.post("/login")
@throttle.limited(throttle.ACCOUNT_FAILURES, throttle.LOGIN_IP_FAILURES)
def login() -> Response:
    """Check credentials and open a new session with a new id (L4)."""
    svc = services()
    body = json_body()
    username = required_str(body, "username", max_length=64)
    password = required_str(body, "password", max_length=4096)
    proof = svc.dpop.token_request()
    # The device id binds the session (D3); clients may send it as X-Device-Id instead.
    client = request_client(login_device_id(body))
    device_name = optional_str(body, "device_name")
    user_id = svc.store.user_id_for(username) if USERNAME_RE.fullmatch(username) else None
    user = svc.store.get_user(user_id) if user_id else {}
    # Unknown user and wrong password: same answer, same argon2 work.
    if not svc.passwords.verify(user.get("p"), password) or not user_id:
        raise InvalidCredentials()
    # The session is created only if the credential is still the one verified here, and a
    # rehash is stored only over the hash verified (both atomic in the store, L4).
    rehash = svc.passwords.hash(password) if svc.passwords.needs_rehash(user["p"]) else ""
    # A DPoP proof binds the new session to the device's key (P1), checked before any
    # password work would be wasted on a request that cannot succeed.
    grant = svc.sessions.issue(user_id=user_id, auth_level="normal", client=client,
                               device_name=device_name, verified_password_hash=user["p"],
                               verified_generation=user.get("g", "0"),
                               rehashed_password_hash=rehash, remember_device=True,
                               **dpop_binding(proof))
    return jsonify(token_json(grant))


@bp.post("/refresh")
def refresh() -> Response:
    """Rotate a refresh token (L3), all decisions made atomically in the store."""
    svc = services()
    token = RefreshToken.parse(json_body().get("refresh_token"))
    if not svc.tokens.is_authentic(token):
        # Not minted by us (or minted before the MAC): its budget is spent first (H2).
        throttle.charge_unverified_token()
    proof = svc.dpop.token_request()
    return jsonify(token_json(svc.sessions.rotate(token, request_client(), **dpop_binding(proof))))


def dpop_binding(proof: Proof | None) -> dict[str, str]:
    """Return the session service's DPoP arguments for a token request's checked proof."""
    return {"dpop_jkt": proof.jkt, "dpop_jti": proof.jti} if proof else {}


def _logout_target(svc: Services, body: dict[str, Any]) -> tuple[str, str, str]:
    """Return (user id, session id, refresh hash) named by the bearer token or the body."""
    if request.headers.get("Authorization"):
        # An expired but genuine access token still names the session to end.
        claims = svc.tokens.verify_access_token(bearer_token(), allow_expired=True)
        return claims.user_id, claims.session_id, ""
    token = RefreshToken.parse(body.get("refresh_token"))
    return token.user_id, token.session_id, svc.tokens.refresh_hash(token)


@bp.post("/logout")
def logout() -> tuple[str, int]:
    """End this session on the server (L1); idempotent, 401 only for a malformed token."""
    svc = services()
    body = json_body(required=False)
    user_id, session_id, refresh_hash = _logout_target(svc, body)
    svc.sessions.revoke(user_id, session_id, "logout", refresh_hash=refresh_hash)
    return "", 204
