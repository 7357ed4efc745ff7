"""Apply the transport rules to every request and response (X1, X3, H1).

Order matters and follows API.md: a token in the URL is refused on every path and method
*before anything else is checked* (and, being leaked, its session is ended); then TRACE
(405 with ``Allow``), body size before any parsing (a chunked body is read, bounded, here)
and content type; then the view, whose body is parsed once by ``api/inputs.py``. Every
response gets ``nosniff``; every API response ``Cache-Control: no-store`` and ``Pragma:
no-cache`` (token responses above all); HSTS when configured or served over TLS.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from flask import Flask, Response, current_app, request

from .api.inputs import HardenedRequest, body_bytes
from .config import Settings
from .errors import (
    InvalidToken,
    MethodNotAllowed,
    PayloadTooLarge,
    TokenInUrl,
    UnsupportedMediaType,
)
from .extension import services
from .redaction import TOKEN_QUERY_PARAMS, url_decoded
from .store import Revocation
from .tokens import SESSION_ID_LENGTH, RefreshToken, session_ids_in, tokens_in

__all__ = ["init_app"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORM_PATH_PREFIX = "/oauth/"
_CACHEABLE_PATHS = frozenset({"/.well-known/jwks.json", "/openapi.json"})
# X1's bound on the work one URL can cause (H2): tokens verified and revoked (each is a
# signature check or an HMAC, and a store call). Decoding is bounded in url_decoded.
_MAX_LEAKED_TOKENS = 4
_SHORTEST_TOKEN = SESSION_ID_LENGTH  # the shortest thing X1 looks for; encoding only lengthens
_NAME_PARTS = re.compile(r"[\[\]]+")


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


def _credential_named(query: str) -> bool:
    """Say whether any query parameter is named like a credential (API.md's list).

    Array and nested names count by any part (``token[]``, ``data[access_token]``).
    """
    for name, _ in parse_qsl(query, keep_blank_values=True):
        parts = (part.lower() for part in _NAME_PARTS.split(name))
        if any(part in TOKEN_QUERY_PARAMS for part in parts):
            return True
    return False


def _refuse_tokens_in_url() -> None:
    """Refuse a request whose URL carries a Latchkey token anywhere (X1); end its session.

    Path and query are scanned percent-decoded, names and values alike, for an access
    token, a refresh token or a session id, glued to other text or not; a parameter named
    like a credential is refused whatever it holds. The one path segment that is meant to
    hold a session id (``DELETE /v1/auth/sessions/{session_id}``) is not a leak.
    """
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "")
    # Fast path for the common request: no query string and a path too short to hold even
    # a session id. It runs before every request, the protected hot path included.
    if not query and len(path) < _SHORTEST_TOKEN:
        return
    path_text = url_decoded(path)
    query_text = url_decoded(query, plus=True) if query else ""
    tokens = tokens_in(path_text + "\n" + query_text, _MAX_LEAKED_TOKENS)
    routed_session_id = (request.view_args or {}).get("session_id")
    session_ids = [sid for sid in session_ids_in(path_text) if sid != routed_session_id]
    session_ids += session_ids_in(query_text)
    if not tokens and not session_ids and not (query and _credential_named(query)):
        return
    reported = False
    for value in tokens:
        reported = _revoke_leaked(value) or reported
    if not reported:
        # No live or ended token of ours (a session id alone names no user, so it cannot
        # be revoked), but a client still put a credential in a URL: an event of its own.
        services().events.security("token_in_url", ip=request.remote_addr, revoked=False)
    raise TokenInUrl("Send tokens only in the Authorization header or a JSON body")


def _allowed_methods() -> list[str]:
    """Return the methods this request's path answers to (none if it names no route)."""
    methods = current_app.url_map.bind_to_environ(request.environ).allowed_methods()
    return [m for m in methods if m != "TRACE"]


def init_app(app: Flask, settings: Settings) -> None:
    """Register the request checks and response headers on ``app``."""
    # werkzeug refuses a Content-Length over the limit; a chunked body is measured by
    # body_bytes, which reads one byte past the limit (werkzeug alone would cut it short).
    app.config["MAX_CONTENT_LENGTH"] = max_body = settings.max_body_bytes
    # Every request.get_json, ours or an extension's, is the one hardened parse (H1).
    app.request_class = HardenedRequest
    hsts = f"max-age={settings.hsts_max_age_seconds}; includeSubDomains"
    always_hsts = settings.hsts_enabled

    def check_request() -> None:
        _refuse_tokens_in_url()
        method = request.method
        if method == "TRACE":
            raise MethodNotAllowed(_allowed_methods())
        # Size before anything parses the body (H1): the header, or a chunked body read.
        length = request.content_length
        if length is not None and length > max_body:
            raise PayloadTooLarge()
        chunked = length is None and "Transfer-Encoding" in request.headers
        if chunked:
            body_bytes()
        if method in _BODY_METHODS and (length or chunked):
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
