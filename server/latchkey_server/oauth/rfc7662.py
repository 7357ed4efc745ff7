"""Token introspection (RFC 7662 section 2) for resource clients, over the session service.

Section 2.2: a token is active only if its session is live *now*, so a session ended
anywhere is inactive on the very next call (R1), whatever the token's ``exp`` says. The
check is :meth:`SessionService.introspect`: one store round trip that also counts as the
session's activity (API.md), without applying device binding, since the caller is a
resource server and not the user's device. Anything not active is exactly
``{"active": false}``: no reason, so the endpoint cannot be used to learn why.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..errors import ApiError
from ..sessions import Introspection, SessionService
from ..tokens import RefreshToken, TokenService
from .clients import OAuthClient
from .errors import InvalidClientError
from .forms import token_parameter

__all__ = ["INACTIVE", "introspect_token"]

INACTIVE: dict[str, Any] = {"active": False}


def introspect_token(form: dict[str, str], client: OAuthClient, sessions: SessionService,
                     tokens: TokenService, settings: Settings) -> dict[str, Any]:
    """Run section 2.1 for an authenticated client; return the section 2.2 response."""
    # Section 2.1: the endpoint MUST require authorization, against token scanning:
    # only resource clients (HTTP Basic with their secret) may ask.
    if client.client_type != "resource":
        raise InvalidClientError(description="Introspection needs a resource client",
                                 status_code=401)
    # Section 2.1: token is REQUIRED, token_type_hint OPTIONAL (forms.token_parameter);
    # an expired access token is inactive: verification refuses it.
    try:
        token = token_parameter(form, tokens, allow_expired=False)
        if isinstance(token, RefreshToken):
            found = sessions.introspect(token.user_id, token.session_id, refresh=token)
        else:
            found = sessions.introspect(token.user_id, token.session_id, claims=token)
    except ApiError as exc:
        if exc.status == 401:
            return dict(INACTIVE)
        raise
    return dict(INACTIVE) if found is None else _active(found, settings)


def _active(found: Introspection, settings: Settings) -> dict[str, Any]:
    """Return section 2.2's members for a live session's token (API.md's list)."""
    body: dict[str, Any] = {
        "active": True,
        "sub": found.user_id,
        "sid": found.session_id,
        "client_id": found.client_id,
        "iss": settings.issuer,
        "aud": settings.audience,
        "exp": found.expires_at,
    }
    if found.issued_at is not None:
        body["iat"] = found.issued_at
    body.update(token_type=found.token_type, auth_level=found.auth_level,
                auth_time=found.auth_time)
    if found.jkt:
        # RFC 9449 section 6.2: the key a bound token must be presented with.
        body["cnf"] = {"jkt": found.jkt}
    return body
