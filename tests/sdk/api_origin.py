"""A backend team's API on loopback for the SDK's ``api_origins`` tests (R4).

A real HTTP server (werkzeug's threaded WSGI server, in a background thread) running a tiny
WSGI app that checks each bearer token the way a service in any language can: ``POST
/oauth/introspect`` on the real Latchkey server, as a resource client. It answers as RFC
6750 says, with Latchkey's problem+json codes, so the SDK can map its refusals:

- ``GET /whoami``: the token's ``sub`` and ``sid`` (200), or 401 ``token_expired`` when
  introspection says inactive and the token's own ``exp`` has passed, else 401
  ``session_revoked`` (introspection does not say why; in these tests an inactive,
  unexpired token is one whose session was ended);
- ``GET /rfc6750/whoami``: the same check, refusing with only the challenge
  (``WWW-Authenticate: Bearer error="invalid_token"``) and no body, as a service that knows
  nothing of problem+json does;
- ``GET /redirect?to=<url>``: 307 to ``to``, checking nothing;
- ``GET /refuse``: 401 ``session_revoked`` for anyone: what a hostile redirect target says;
- anything else: 200 ``{}``.

Every request is recorded (:class:`Seen`) with the headers it carried, so a test can say
what reached which origin. The same class, with ``introspect=False``, is the foreign origin
that must never see a token.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = ["ApiOrigin", "Seen"]


@dataclass(frozen=True)
class Seen:
    """One request the API origin received, and what it answered."""

    path: str
    authorization: str | None
    device_id: str | None
    status: int


def _claims(token: str) -> dict[str, Any]:
    """Read a JWT's claims without verifying (introspection has decided; this says why)."""
    try:
        part = token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class ApiOrigin:
    """Serve the app above on ``127.0.0.1``; ``start()``/``stop()``, ``url(path)``."""

    def __init__(self, *, issuer: str | None = None, client_id: str = "",
                 client_secret: str = "") -> None:
        self._issuer = issuer
        self._credentials = (client_id, client_secret)
        self._http = httpx.Client(timeout=10)
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ApiOrigin:
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="api-origin")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def requests(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    # -- the WSGI app -----------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        authorization = environ.get("HTTP_AUTHORIZATION")
        if path == "/redirect":
            target = parse_qs(environ.get("QUERY_STRING", "")).get("to", [""])[0]
            status, headers, body = 307, [("Location", target)], b""
        elif path == "/refuse":
            status, headers, body = self._refusal("session_revoked", problem=True)
        elif path in {"/whoami", "/rfc6750/whoami"} and self._issuer:
            status, headers, body = self._whoami(authorization,
                                                 problem=not path.startswith("/rfc6750"))
        else:
            status, headers, body = 200, [("Content-Type", "application/json")], b"{}"
        with self._lock:
            self.seen.append(Seen(path, authorization, environ.get("HTTP_X_DEVICE_ID"),
                                  status))
        start_response(f"{status} {'OK' if status == 200 else 'Refused'}", headers)
        return [body]

    def _whoami(self, authorization: str | None, *, problem: bool
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        scheme, _, token = (authorization or "").partition(" ")
        # A DPoP-bound token comes as "DPoP <token>" (RFC 9449 s7.1). This test origin asks
        # introspection about the token only; proofs are latchkey-resource's to check.
        if scheme.lower() not in {"bearer", "dpop"} or not token:
            return self._refusal("invalid_token", problem=problem)
        info = self._http.post(f"{self._issuer}/oauth/introspect", data={"token": token},
                               auth=self._credentials).json()
        if info.get("active") is True:
            body = json.dumps({"sub": info["sub"], "sid": info["sid"]}).encode()
            return 200, [("Content-Type", "application/json")], body
        exp = _claims(token).get("exp")
        expired = isinstance(exp, int | float) and exp <= time.time()
        return self._refusal("token_expired" if expired else "session_revoked",
                             problem=problem)

    @staticmethod
    def _refusal(code: str, *, problem: bool) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
        if not problem:
            return 401, headers, b""
        doc = {"type": "about:blank", "title": "Unauthorized", "status": 401, "code": code}
        if code == "session_revoked":
            doc["reason"] = "remote"
        headers.append(("Content-Type", "application/problem+json"))
        return 401, headers, json.dumps(doc).encode()
