"""Operational endpoints: liveness, readiness against the store, metrics, the API contract."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address

from flask import Blueprint, Response, jsonify, request

from ..config import metrics_networks
from ..errors import NotFound, StoreUnavailable
from ..extension import services
from ..observability import render_metrics
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


@bp.get("/metrics")
def metrics() -> Response:
    """Return Prometheus metrics to the allowed networks; 404 to everyone else.

    Counts of security events say something to an attacker probing the limits, so the
    endpoint answers only scrapers inside ``LATCHKEY_METRICS_ALLOWED_NETWORKS`` (private
    networks and loopback by default) and looks absent to the rest.
    """
    try:
        client = ip_address(request.remote_addr or "")
    except ValueError:
        raise NotFound() from None
    if isinstance(client, IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped
    if not any(client in net for net in metrics_networks(services().settings)):
        raise NotFound()
    return render_metrics()


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 description of this server."""
    return jsonify(openapi_document(admin_http=services().settings.admin_http))
