"""Latchkey for resource servers: a backend team's own API enforces Latchkey sessions.

A session ended anywhere is refused on the very next request to the backend's API, as it
is on Latchkey's own: the access token is verified with keys from the Latchkey server's
JWKS, and the session is checked in the shared store in the same single round trip the
token server runs. docs/RESOURCE_SERVERS.md has the three ways to do it and their costs.

    verifier = ResourceVerifier(issuer="https://auth.example.com",
                                redis_url="redis://lk-resource:...@redis:6379/0")
    principal = verifier.verify(request_authorization, headers=request_headers)

Adapters: ``latchkey_resource.flask``, ``.asgi``, ``.fastapi``, ``.wsgi``.
"""

from .refusals import (
    InvalidRequest,
    InvalidToken,
    Refusal,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    TokenExpired,
)
from .verifier import Principal, ResourceVerifier

__all__ = [
    "InvalidRequest",
    "InvalidToken",
    "Principal",
    "Refusal",
    "ResourceVerifier",
    "SessionExpired",
    "SessionRevoked",
    "StoreUnavailable",
    "TokenExpired",
    "__version__",
]

__version__ = "0.1.0"
