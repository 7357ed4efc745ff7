"""Apply the transport rules to every request and response (X1, X3).

Order matters and follows API.md: a token in the URL is refused on every path and method
*before anything else is checked* (and, being leaked, its session is ended); then TRACE,
body size and content type; then the view. Every response gets ``nosniff``; every API
response ``Cache-Control: no-store`` and ``Pragma: no-cache`` (token responses above all);
HSTS when configured or served over TLS.
"""

from __future__ import annotations

from flask import Flask, Response, request

from .config import Settings
from .errors import (
    InvalidToken,
    MethodNotAllowed,
    PayloadTooLarge,
    TokenInUrl,
    UnsupportedMediaType,
)
from .extension import services
from .redaction import TOKEN_QUERY_PARAMS
from .store import Revocation
from .tokens import MIN_TOKEN_LENGTH, RefreshToken, looks_like_token

__all__ = ["init_app"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORM_PATH_PREFIX = "/oauth/"
_CACHEABLE_PATHS = frozenset({"/.well-known/jwks.json", "/openapi.json"})


def _revoke_leaked(value: str) -> bool:
    """End the session a leaked token belongs to; return whether it was one of ours.

    A genuine token is reported here, with whether its session was still live.
    """
    svc = services()
    refresh_hash = ""
    if value.startswith("lkr_"):
        try:
            token = RefreshToken.parse(value)
        except InvalidToken:
            return False
        user_id, session_id = token.user_id, token.session_id
        refresh_hash = svc.tokens.refresh_hash(token)
    else:
        try:
            claims = svc.tokens.verify_access_token(value, allow_expired=True)
        except InvalidToken:
            return False
        user_id, session_id = claims.user_id, claims.session_id
    # The service ends the session and logs the revocation; the leak is ours to report.
    outcome = svc.sessions.revoke(user_id, session_id, "leak", refresh_hash=refresh_hash)
    if outcome is Revocation.UNKNOWN:
        return False  # a forged or foreign token names no session of ours
    svc.events.security("token_in_url", session_id=session_id, user_id=user_id,
                        ip=request.remote_addr, revoked=outcome is Revocation.REVOKED)
    return True


def _refuse_tokens_in_url() -> None:
    query = request.environ.get("QUERY_STRING", "")
    path = request.environ.get("PATH_INFO", "")
    # Fast path for the common request: no query string and no path segment long enough
    # to be a token. It runs before every request, the protected hot path included.
    if not query and len(path) <= MIN_TOKEN_LENGTH:
        return
    named = [v for k, vs in request.args.lists() if k.lower() in TOKEN_QUERY_PARAMS for v in vs]
    shaped = [seg for seg in path.split("/")
              if len(seg) >= MIN_TOKEN_LENGTH and looks_like_token(seg)]
    if not named and not shaped:
        return
    reported = False
    for value in named + shaped:
        if looks_like_token(value):
            reported = _revoke_leaked(value) or reported
    if not reported:
        # Not one of our live or ended tokens, but a client still put a credential-named
        # parameter in a URL: worth a security event of its own.
        services().events.security("token_in_url", ip=request.remote_addr, revoked=False)
    raise TokenInUrl("Send tokens only in the Authorization header or a JSON body")


def init_app(app: Flask, settings: Settings) -> None:
    """Register the request checks and response headers on ``app``."""
    # werkzeug enforces the limit while streaming too, which covers chunked bodies.
    app.config["MAX_CONTENT_LENGTH"] = max_body = settings.max_body_bytes
    hsts = f"max-age={settings.hsts_max_age_seconds}; includeSubDomains"
    always_hsts = settings.hsts_enabled

    def check_request() -> None:
        _refuse_tokens_in_url()
        method = request.method
        if method == "TRACE":
            raise MethodNotAllowed()
        length = request.content_length
        if length is not None and length > max_body:
            raise PayloadTooLarge()
        if method in _BODY_METHODS and (length or request.headers.get("Transfer-Encoding")):
            # The OAuth endpoints take forms, and check them themselves (oauth/forms.py).
            if request.mimetype != "application/json" and not request.path.startswith(
                    _FORM_PATH_PREFIX):
                raise UnsupportedMediaType()

    def secure_headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        if request.path not in _CACHEABLE_PATHS:
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
        if always_hsts or request.is_secure:
            headers["Strict-Transport-Security"] = hsts
        return response

    app.before_request(check_request)
    app.after_request(secure_headers)
