"""Publish the public signing keys so other services can verify access tokens (T5)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..extension import services

__all__ = ["bp"]

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")


@bp.get("/jwks.json")
def jwks() -> Response:
    """Return the JWKS: the current key and retired keys whose tokens may still be live."""
    resp = jsonify(services().keyring.jwks())
    # Short cache: verifiers refetch soon after a rotation; retired keys stay listed anyway.
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
