"""The token endpoint's refresh grant (RFC 6749 sections 6 and 5), over the session service.

Only ``grant_type=refresh_token`` exists: sessions start with a ``/v1`` login, and the
OAuth face is for the standard clients that then keep them alive. Every decision about the
refresh token (rotation, the grace-window retry, reuse, idle and absolute limits, device
binding, the client it belongs to) is :meth:`SessionService.rotate`'s, exactly as on
``/v1/auth/refresh``: one session model, two faces.
"""

from __future__ import annotations

from typing import Any

from latchkey_resource.dpop import Proof

from ..serialise import token_json
from ..sessions import Client, SessionService
from ..tokens import RefreshToken
from .clients import OAuthClient
from .errors import (
    InvalidRequestError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)

__all__ = ["GRANT_TYPES", "refresh_grant"]

GRANT_TYPES = ("refresh_token",)


def refresh_grant(form: dict[str, str], client: OAuthClient, sessions: SessionService,
                  device: Client, proof: Proof | None = None) -> dict[str, Any]:
    """Run section 6 for an identified client; return the section 5.1 response body.

    ``proof`` is the request's checked DPoP proof (RFC 9449 section 5), if any: a bound
    session's refresh token needs one by its key, and the response is then
    ``token_type`` ``DPoP``.

    Errors of the session service propagate: the endpoint answers them as section 5.2's
    ``invalid_grant`` (``errors.from_api_error``).
    """
    # Section 4.x / 6: grant_type is REQUIRED, and must be one this server supports.
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequestError(description="Missing grant_type")
    if grant_type not in GRANT_TYPES:
        # Authlib's class takes the grant type for its header text; the body says what
        # is supported instead of echoing the client's value.
        unsupported = UnsupportedGrantTypeError(grant_type="refresh_token")
        unsupported.description = "Only grant_type=refresh_token is supported"
        raise unsupported
    # Section 5.2, unauthorized_client: a resource client holds no refresh tokens.
    if client.client_type != "public":
        raise UnauthorizedClientError(description="This client may not refresh tokens")
    # Section 6: refresh_token is REQUIRED.
    value = form.get("refresh_token")
    if not value:
        raise InvalidRequestError(description="Missing refresh_token")
    # Section 6, scope: no scope was granted, so none can be asked for; responses carry
    # none either (API.md).
    if form.get("scope"):
        raise InvalidRequestError(description="Latchkey grants no scopes")
    # Section 6: validate the refresh token and that it was issued to this client;
    # then issue a new access token and (section 6, last paragraph) a new refresh token.
    grant = sessions.rotate(RefreshToken.parse(value), device, client_id=client.client_id,
                            dpop_jkt=proof.jkt if proof else "",
                            dpop_jti=proof.jti if proof else "")
    # Section 5.1: access_token, token_type, expires_in, refresh_token, plus the /v1 token
    # response's other fields (section 5.1 allows additional parameters).
    return token_json(grant)
