"""Protect any WSGI app (Django, Pyramid, Bottle, Falcon...) with Latchkey sessions.

    application = LatchkeyWSGIMiddleware(application, verifier, exempt_paths={"/healthz"})

Every request is verified before the app sees it; the principal is put in
``environ["latchkey.principal"]`` (in Django: ``request.META["latchkey.principal"]``), and
a refused request is answered here, in problem+json with Latchkey's code and the RFC 6750
challenge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .refusals import Refusal
from .verifier import ResourceVerifier

__all__ = ["PRINCIPAL_ENVIRON_KEY", "LatchkeyWSGIMiddleware", "environ_headers"]

PRINCIPAL_ENVIRON_KEY = "latchkey.principal"
_STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_headers(environ: dict[str, Any]) -> dict[str, str]:
    """Return a WSGI environ's request headers by their HTTP names."""
    headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
               if key.startswith("HTTP_")}
    if "CONTENT_TYPE" in environ:
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return headers


def _url(environ: dict[str, Any]) -> str:
    host = (environ.get("HTTP_HOST")
            or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}")
    query = environ.get("QUERY_STRING", "")
    return (f"{environ.get('wsgi.url_scheme', 'http')}://{host}{environ.get('SCRIPT_NAME', '')}"
            f"{environ.get('PATH_INFO', '')}" + (f"?{query}" if query else ""))


class LatchkeyWSGIMiddleware:
    """WSGI middleware: only requests of a live session reach the app."""

    def __init__(self, app: WSGIApp, verifier: ResourceVerifier, *,
                 exempt_paths: Collection[str] = ()) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self.exempt_paths:
            return self.app(environ, start_response)
        # With the token server's nonces on, every answer hands out the current one, a
        # success included, as the Flask extension and the ASGI middleware do (RFC 9449
        # section 8).
        nonce = self.verifier.current_nonce()
        if nonce is not None:
            start_response = _with_nonce(start_response, nonce)
        try:
            environ[PRINCIPAL_ENVIRON_KEY] = self.verifier.verify(
                environ.get("HTTP_AUTHORIZATION"), method=environ.get("REQUEST_METHOD", "GET"),
                url=_url(environ), headers=environ_headers(environ),
                remote_addr=environ.get("REMOTE_ADDR", ""))
        except Refusal as refusal:
            body = json.dumps(refusal.problem()).encode()
            headers = [("Content-Type", "application/problem+json"),
                       ("Content-Length", str(len(body))), *refusal.headers().items()]
            start_response(f"{refusal.status} {_STATUS_TEXT.get(refusal.status, '')}".rstrip(),
                           headers)
            return [body]
        return self.app(environ, start_response)


def _with_nonce(start_response: Callable[..., Any], nonce: str) -> Callable[..., Any]:
    """Return ``start_response`` adding ``DPoP-Nonce`` unless the answer has one already."""

    def start_response_with_nonce(status: str, headers: list[tuple[str, str]],
                                  *args: Any) -> Any:
        if not any(name.lower() == "dpop-nonce" for name, _ in headers):
            headers = [*headers, ("DPoP-Nonce", nonce)]
        return start_response(status, headers, *args)

    return start_response_with_nonce
