"""Publish what other services need to trust Latchkey: the public signing keys (T5) and
the RFC 8414 authorization server metadata (R2)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..extension import services
from ..keys import JWKS_MAX_AGE_SECONDS
from ..oauth.rfc8414 import metadata

__all__ = ["bp"]

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")


@bp.get("/jwks.json")
def jwks() -> Response:
    """Return the JWKS: the current key, the next key, and retired keys still verifying.

    Withdrawn keys are never listed. The next key is here before it signs, so a verifier
    holding this document for its whole max-age still knows the key of every token a
    rotation in that time produces; retired keys stay listed while their tokens live.
    """
    resp = jsonify(services().keyring.jwks())
    resp.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
    return resp


@bp.get("/oauth-authorization-server")
def oauth_authorization_server() -> Response:
    """Return the RFC 8414 metadata: the issuer and the OAuth endpoints' URLs."""
    return jsonify(metadata(services().settings))
