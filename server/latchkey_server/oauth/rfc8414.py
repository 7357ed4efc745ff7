"""Authorization server metadata (RFC 8414 section 2), built from the issuer URL.

Every URL derives from ``LATCHKEY_ISSUER`` (never from the request's ``Host``), so the
document and the tokens' ``iss`` stay right behind a proxy, and section 3.3's rule holds:
``issuer`` is identical to the issuer the metadata is published for. The document is
checked with Authlib's ``AuthorizationServerMetadata`` validators when the app is built
(:func:`validate_metadata`), so a field RFC 8414 marks REQUIRED cannot go missing
unnoticed. Two of them are Authlib's stricter reading, not the RFC's, and are skipped:
``response_types_supported`` must be non-empty there, but without an authorization
endpoint the honest value is ``[]``; and every URL must be https there, where Latchkey
also allows plain http on a loopback issuer (the quick start; ``config.py`` refuses
http anywhere else).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from latchkey_resource.dpop import DPOP_ALGORITHMS

from ..config import Settings
from .rfc6749 import GRANT_TYPES

__all__ = ["METADATA_PATH", "TOKEN_PATH", "metadata", "validate_metadata"]

METADATA_PATH = "/.well-known/oauth-authorization-server"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
JWKS_PATH = "/.well-known/jwks.json"


def metadata(settings: Settings) -> dict[str, Any]:
    """Return the section 2 metadata document, validated."""
    base = settings.issuer
    doc: dict[str, Any] = {
        # REQUIRED: the issuer, identical to the access tokens' iss (R3).
        "issuer": base,
        # authorization_endpoint is REQUIRED only with a grant that uses it; none does.
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + JWKS_PATH,
        # REQUIRED: no response type, since there is no authorization endpoint.
        "response_types_supported": [],
        "grant_types_supported": list(GRANT_TYPES),
        # Public clients name themselves (none); Basic with an empty secret is the same.
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint": base + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint": base + INTROSPECTION_PATH,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
    }
    if settings.dpop != "off":
        # RFC 9449 section 5.1: the proof algorithms the token endpoint accepts.
        doc["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
    return doc


def validate_metadata(doc: dict[str, Any]) -> None:
    """Check the document with Authlib's validators for RFC 8414 section 2; raise
    ``ValueError`` (see the module docstring for the two that are skipped)."""
    if not isinstance(doc.get("response_types_supported"), list):
        raise ValueError('"response_types_supported" is required')
    checked = AuthorizationServerMetadata(doc)
    skipped = {"response_types_supported"}
    if not doc["issuer"].startswith("https://"):
        skipped |= {key for key in checked.REGISTRY_KEYS
                    if key == "issuer" or key.endswith(("_endpoint", "_uri"))}
    for key in checked.REGISTRY_KEYS:
        if key not in skipped:
            getattr(checked, f"validate_{key}")()
