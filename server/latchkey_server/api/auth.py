"""Sign in, refresh and sign out: the session life cycle's HTTP face (L1, L3, L4, T1-T5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import throttle
from ..binding import check_binding, request_device_id
from ..errors import (
    InvalidCredentials,
    InvalidToken,
    RefreshTokenReused,
    RegistrationDisabled,
    SessionExpired,
    SessionRevoked,
    TokenExpired,
    UnprocessableRequest,
    WeakPassword,
)
from ..extension import Services, services
from ..guard import bearer_token
from ..passwords import USERNAME_RE, PasswordPolicy
from ..tokens import RefreshToken, new_session_id, new_user_id
from .inputs import client_ip, json_body, optional_str, required_str, user_agent

__all__ = ["bp", "issue_session", "token_response"]

bp = Blueprint("auth", __name__, url_prefix="/v1/auth")

# Beyond this many generations, an old token's lineage is not recomputed (bounded CPU).
MAX_LINEAGE_STEPS = 100_000


def token_response(svc: Services, *, user_id: str, refresh: RefreshToken, auth_level: str,
                   auth_time: int, absolute_left_seconds: int) -> Response:
    """Build the token response of API.md for a session and its current refresh token."""
    access = svc.tokens.issue_access_token(user_id, refresh.session_id, auth_level, auth_time)
    return jsonify({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": svc.settings.access_token_ttl_seconds,
        "refresh_token": refresh.value,
        "session_id": refresh.session_id,
        "idle_timeout": svc.settings.idle_timeout_seconds,
        "absolute_expires_in": max(0, absolute_left_seconds),
        "auth_level": auth_level,
    })


def issue_session(svc: Services, *, user_id: str, auth_level: str, device_id: str,
                  device_name: str, replaces: str = "", replaced_reason: str = "",
                  end_others_reason: str = "", new_password_hash: str = "",
                  verified_password_hash: str = "") -> Response:
    """Create a fresh session (new id, new tokens) and answer with its token response.

    Step-up and password change pass ``replaces`` (and password change a new password hash
    and ``end_others_reason``): the store does it all in one atomic script (L4).
    """
    session_id = new_session_id()
    refresh = svc.tokens.new_refresh_token(user_id, session_id)
    auth_time = int(time.time())
    _, ended = svc.store.create_session(
        user_id=user_id, session_id=session_id, refresh_hash=svc.tokens.refresh_hash(refresh),
        auth_level=auth_level, auth_time=auth_time, device_id=device_id,
        device_name=device_name, user_agent=user_agent(), ip=client_ip(),
        replaces=replaces, replaced_reason=replaced_reason,
        end_others_reason=end_others_reason, new_password_hash=new_password_hash,
        verified_password_hash=verified_password_hash,
    )
    for ended_id, reason in ended:
        kind = "session_expired" if reason in ("idle", "absolute") else "session_revoked"
        svc.events.lifecycle(kind, session_id=ended_id, user_id=user_id, reason=reason)
    svc.events.lifecycle("session_created", session_id=session_id, user_id=user_id,
                         auth_level=auth_level)
    return token_response(svc, user_id=user_id, refresh=refresh, auth_level=auth_level,
                          auth_time=auth_time,
                          absolute_left_seconds=svc.settings.absolute_timeout_seconds)


@bp.post("/register")
@throttle.limited(throttle.ACCOUNT_FAILURES, throttle.REGISTRATION_IP_FAILURES)
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
    user_id = new_user_id()
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    svc.store.create_user(user_id, username, svc.passwords.hash(password), created)
    svc.events.lifecycle("user_registered", user_id=user_id)
    return jsonify({"user_id": user_id}), 201


@bp.post("/login")
@throttle.limited(throttle.ACCOUNT_FAILURES, throttle.LOGIN_IP_FAILURES)
def login() -> Response:
    """Check credentials and open a new session with a new id (L4)."""
    svc = services()
    body = json_body()
    username = required_str(body, "username", max_length=64)
    password = required_str(body, "password", max_length=4096)
    # The device id binds the session (D3); clients may send it as X-Device-Id instead.
    device_id = optional_str(body, "device_id") or request_device_id()
    device_name = optional_str(body, "device_name")
    user_id = svc.store.user_id_for(username) if USERNAME_RE.fullmatch(username) else None
    user = svc.store.get_user(user_id) if user_id else {}
    # Unknown user and wrong password: same answer, same argon2 work.
    if not svc.passwords.verify(user.get("p"), password) or not user_id:
        raise InvalidCredentials()
    if svc.passwords.needs_rehash(user["p"]):
        svc.store.set_password_hash(user_id, svc.passwords.hash(password))
    return issue_session(svc, user_id=user_id, auth_level="normal", device_id=device_id,
                         device_name=device_name)


def _refuse_rotation(svc: Services, token: RefreshToken, state: str, reason: str,
                     just_ended: bool) -> None:
    """Raise the error for a refresh token of a session that has ended."""
    if state == "expired":
        if just_ended:
            svc.events.lifecycle("session_expired", session_id=token.session_id,
                                 user_id=token.user_id, reason=reason)
        raise SessionExpired(reason or "idle")
    raise SessionRevoked(reason or None)


def _reuse_detected(svc: Services, token: RefreshToken, revoked_now: bool) -> RefreshTokenReused:
    svc.events.security("refresh_token_reused", session_id=token.session_id,
                        user_id=token.user_id, ip=client_ip(), generation=token.generation)
    if revoked_now:
        svc.events.lifecycle("session_revoked", session_id=token.session_id,
                             user_id=token.user_id, reason="reuse")
    return RefreshTokenReused()


def _is_ancestor(svc: Services, token: RefreshToken, current_generation: int,
                 known_hashes: set[str]) -> bool:
    if current_generation - token.generation > MAX_LINEAGE_STEPS:
        return False
    return bool(known_hashes & set(svc.tokens.descendant_hashes(token, current_generation)))


@bp.post("/refresh")
def refresh() -> Response:
    """Rotate a refresh token (L3), all decisions made atomically in the store."""
    svc = services()
    token = RefreshToken.parse(json_body().get("refresh_token"))
    successor = svc.tokens.successor(token)
    result = svc.store.rotate_refresh(
        user_id=token.user_id, session_id=token.session_id,
        presented_hash=svc.tokens.refresh_hash(token),
        successor_hash=svc.tokens.refresh_hash(successor),
        presented_generation=token.generation,
    )
    if result.outcome in ("rotated", "replayed"):
        check_binding(svc, user_id=token.user_id, session_id=token.session_id,
                      bound_device_id=result.device_id, bound_user_agent=result.user_agent)
        if result.outcome == "rotated":
            svc.events.lifecycle("session_refreshed", session_id=token.session_id,
                                 user_id=token.user_id, generation=successor.generation)
        return token_response(svc, user_id=token.user_id, refresh=successor,
                              auth_level=result.auth_level, auth_time=result.auth_time,
                              absolute_left_seconds=result.absolute_left_ms // 1000)
    if result.outcome == "ended":
        _refuse_rotation(svc, token, result.state, result.reason, result.just_ended)
    if result.outcome == "reused":
        raise _reuse_detected(svc, token, revoked_now=True)
    if result.outcome == "check" and _is_ancestor(
        svc, token, result.current_generation,
        {h for h in (result.current_hash, result.previous_hash) if h},
    ):
        # An older token of this session's own chain: it was copied. End the session.
        outcome = svc.store.revoke_session(token.user_id, token.session_id, "reuse")
        raise _reuse_detected(svc, token, revoked_now=outcome == "revoked")
    svc.events.security("unknown_session_token", session_id=token.session_id,
                        user_id=token.user_id, ip=client_ip(), kind="refresh")
    raise InvalidToken()


def _logout_target(svc: Services, body: dict[str, Any]) -> tuple[str, str, str]:
    """Return (user id, session id, refresh hash) named by the bearer token or the body."""
    if request.headers.get("Authorization"):
        raw = bearer_token()
        try:
            claims = svc.tokens.verify_access_token(raw)
        except TokenExpired:
            # An expired but genuine access token still names the session to end.
            claims = svc.tokens.claims_ignoring_expiry(raw)
        return claims.user_id, claims.session_id, ""
    token = RefreshToken.parse(body.get("refresh_token"))
    return token.user_id, token.session_id, svc.tokens.refresh_hash(token)


@bp.post("/logout")
def logout() -> tuple[str, int]:
    """End this session on the server (L1); idempotent, 401 only for a malformed token."""
    svc = services()
    body = json_body(required=False)
    user_id, session_id, refresh_hash = _logout_target(svc, body)
    outcome = svc.store.revoke_session(user_id, session_id, "logout", refresh_hash)
    if outcome == "revoked":
        svc.events.lifecycle("session_logged_out", session_id=session_id, user_id=user_id)
    return "", 204
