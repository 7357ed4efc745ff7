"""The Flask glue of the OAuth endpoints: parse the form, identify the client, call the
protocol step, answer in RFC 6749's shape. No decision is made here.

Errors raised anywhere in a request routed to this blueprint, the transport checks of
``hardening.py`` included (a token in the URL, a body over the limit, TRACE), are
answered in section 5.2's shape by the blueprint's handlers (Flask looks up a routed
request's blueprint handlers before the app's), never as ``/v1``'s problem+json.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from .. import throttle
from ..binding import request_client
from ..errors import ApiError, InvalidDPoPProof, InvalidToken, TooManyRequests
from ..extension import services
from .clients import ClientRegistry
from .errors import OAuth2Error, from_api_error, oauth_response
from .forms import read_form
from .rfc6749 import refresh_grant
from .rfc7009 import revoke_token
from .rfc7662 import introspect_token

__all__ = ["EXTENSION_KEY", "bp", "registry"]

EXTENSION_KEY = "latchkey_oauth_clients"

bp = Blueprint("oauth", __name__, url_prefix="/oauth")


def registry() -> ClientRegistry:
    """Return the app's client registry (built by ``oauth.init_app``)."""
    try:
        return current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("the OAuth endpoints are not initialised: build the app with "
                           "latchkey_server.create_app()") from None


@bp.post("/token")
def token() -> Response:
    """RFC 6749 section 6: exchange a refresh token for new tokens."""
    form = read_form()
    client = registry().authenticate(request, form)
    svc = services()
    return jsonify(refresh_grant(form, client, svc.sessions, request_client(),
                                 svc.dpop.token_request()))


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009: end the session of a refresh or access token; 200 whatever it was."""
    form = read_form()
    client = registry().authenticate(request, form)
    svc = services()
    revoke_token(form, client, svc.sessions, svc.tokens)
    return Response(status=200)


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662: say whether a token's session is live now, for a resource client."""
    form = read_form()
    client = registry().authenticate(request, form)
    svc = services()
    return jsonify(introspect_token(form, client, svc.sessions, svc.tokens, svc.settings))


@bp.errorhandler(OAuth2Error)
def _oauth_error(error: OAuth2Error) -> Response:
    return oauth_response(error)


@bp.errorhandler(ApiError)
def _api_error(error: ApiError) -> Response:
    counts = isinstance(error, InvalidToken) or (
        isinstance(error, InvalidDPoPProof) and throttle.proof_failure_counts(error))
    if counts and request.endpoint == "oauth.token":
        # The same budget as /v1's invalid tokens (throttle.py): a refresh token no session
        # of ours holds is a guess, whichever face it was sent to; so is a bad proof.
        retry_after = _count_invalid_token()
        if retry_after is not None:
            return oauth_response(from_api_error(TooManyRequests(retry_after)))
    return oauth_response(from_api_error(error))


def _count_invalid_token() -> int | None:
    limiter = current_app.extensions.get(throttle.EXTENSION_KEY)
    return limiter.count_invalid_token() if limiter is not None else None
