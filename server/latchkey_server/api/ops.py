"""Operational endpoints: liveness, readiness against the store, and the API contract."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..errors import StoreUnavailable
from ..extension import services
from ..openapi import openapi_document

__all__ = ["bp"]

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is alive; never touches the store."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Say the store answers; 503 ``store_unavailable`` otherwise."""
    if not services().store.ping():
        raise StoreUnavailable()
    return jsonify({"status": "ready"})


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 description of this server."""
    return jsonify(openapi_document())
