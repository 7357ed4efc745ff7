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
from .errors import InvalidGrantError
from .forms import token_parameter

__all__ = ["revoke_token"]


def revoke_token(form: dict[str, str], client: OAuthClient, sessions: SessionService,
                 tokens: TokenService) -> None:
    """Run section 2.1 for an identified client: end the token's session, if it has one.

    Raises ``invalid_grant`` for a token issued to another client (section 2.1: "verifies
    whether the token was issued to the client making the revocation request"), as
    Authlib's own revocation endpoint does.
    """
    # Section 2.1: token is REQUIRED, token_type_hint OPTIONAL (forms.token_parameter);
    # an expired but genuine access token still names a session to end.
    try:
        token = token_parameter(form, tokens, allow_expired=True)
        if isinstance(token, RefreshToken):
            outcome = sessions.revoke(token.user_id, token.session_id, "logout",
                                      refresh_hash=tokens.refresh_hash(token),
                                      only_client=client.client_id)
        elif token.client_id != client.client_id:
            raise InvalidGrantError(description="The token was issued to another client")
        else:
            outcome = sessions.revoke(token.user_id, token.session_id, "logout")
    except ApiError as exc:
        if exc.status == 401:
            return  # section 2.2: an invalid token is not an error
        raise
    if outcome is Revocation.WRONG_CLIENT:
        raise InvalidGrantError(description="The token was issued to another client")
