"""Token revocation (RFC 7009 section 2): either token of a session ends the session.

A Latchkey access token and refresh token both name their session, and revoking either
ends it with the reason ``logout``, as ``POST /v1/auth/logout`` does, through
:meth:`SessionService.revoke` (so the same event is written). Section 2.2: an invalid,
unknown, expired or already revoked token is answered 200 like any other, so the endpoint
tells a caller nothing about tokens it does not hold.
"""

from __future__ import annotations

from ..errors import ApiError
from ..sessions import SessionService
from ..store import Revocation
from ..tokens import RefreshToken, TokenService
from .clients import OAuthClient
from .errors import InvalidGrantError, InvalidRequestError

__all__ = ["revoke_token"]


def revoke_token(form: dict[str, str], client: OAuthClient, sessions: SessionService,
                 tokens: TokenService) -> None:
    """Run section 2.1 for an identified client: end the token's session, if it has one.

    Raises ``invalid_grant`` for a token issued to another client (section 2.1: "verifies
    whether the token was issued to the client making the revocation request"), as
    Authlib's own revocation endpoint does.
    """
    # Section 2.1: token is REQUIRED; token_type_hint is OPTIONAL, and the server must
    # search all its token types anyway, so a hint (known or not) changes nothing here:
    # the two kinds of token are told apart by their shape.
    value = form.get("token")
    if not value:
        raise InvalidRequestError(description="Missing token")
    try:
        if value.startswith("lkr_"):
            refresh = RefreshToken.parse(value)
            outcome = sessions.revoke(refresh.user_id, refresh.session_id, "logout",
                                      refresh_hash=tokens.refresh_hash(refresh),
                                      only_client=client.client_id)
        else:
            # An expired but genuine access token still names a session to end.
            claims = tokens.verify_access_token(value, allow_expired=True)
            if claims.client_id != client.client_id:
                raise InvalidGrantError(description="The token was issued to another client")
            outcome = sessions.revoke(claims.user_id, claims.session_id, "logout")
    except ApiError as exc:
        if exc.status == 401:
            return  # section 2.2: an invalid token is not an error
        raise
    if outcome is Revocation.WRONG_CLIENT:
        raise InvalidGrantError(description="The token was issued to another client")
