"""Publish what other services need to trust Latchkey: the public signing keys (T5) and
the RFC 8414 authorization server metadata (R2)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..extension import services
from ..oauth.rfc8414 import metadata

__all__ = ["bp"]

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")


@bp.get("/jwks.json")
def jwks() -> Response:
    """Return the JWKS: the current key and retired keys whose tokens may still be live."""
    resp = jsonify(services().keyring.jwks())
    # Short cache: verifiers refetch soon after a rotation; retired keys stay listed anyway.
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@bp.get("/oauth-authorization-server")
def oauth_authorization_server() -> Response:
    """Return the RFC 8414 metadata: the issuer and the OAuth endpoints' URLs."""
    return jsonify(metadata(services().settings))
