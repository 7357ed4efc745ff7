"""Describe the HTTP API as OpenAPI 3.1, the machine-readable twin of ../shared/API.md.

Kept as data beside the code it describes; tests check that every route the app serves is
here and every documented status is one the server really answers with.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .errors import ERROR_CODES

__all__ = ["openapi_document"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): _PROBLEM for s in statuses}


def _json_body(schema_ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _ok(schema_ref: str, status: int = 200, description: str = "OK") -> dict[str, Any]:
    return {str(status): {"description": description,
                          "content": {"application/json": {"schema": {"$ref": schema_ref}}}}}


_BEARER = [{"bearer": []}]
_COMMON = (400, 405, 413, 415, 429, 503)


def _paths() -> dict[str, Any]:
    return {
        "/v1/auth/register": {"post": {
            "operationId": "register", "tags": ["auth"], "security": [],
            "requestBody": _json_body("#/components/schemas/Credentials"),
            "responses": {**_ok("#/components/schemas/UserCreated", 201, "Created"),
                          **_problems(403, 409, 422, *_COMMON)},
        }},
        "/v1/auth/login": {"post": {
            "operationId": "login", "tags": ["auth"], "security": [],
            "requestBody": _json_body("#/components/schemas/LoginRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/auth/refresh": {"post": {
            "operationId": "refresh", "tags": ["auth"], "security": [],
            "requestBody": _json_body("#/components/schemas/RefreshRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/auth/logout": {"post": {
            "operationId": "logout", "tags": ["auth"], "security": [{"bearer": []}, {}],
            "requestBody": _json_body("#/components/schemas/RefreshRequest", required=False),
            "responses": {"204": {"description": "Session ended (or already over)"},
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/me": {"get": {
            "operationId": "me", "tags": ["account"], "security": _BEARER,
            "responses": {**_ok("#/components/schemas/Me"), **_problems(401, *_COMMON)},
        }},
        "/.well-known/jwks.json": {"get": {
            "operationId": "jwks", "tags": ["wellknown"], "security": [],
            "responses": {**_ok("#/components/schemas/Jwks"), **_problems(400, 405, 429)},
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["ops"], "security": [],
            "responses": {**_ok("#/components/schemas/Status"), **_problems(400, 405)},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["ops"], "security": [],
            "responses": {**_ok("#/components/schemas/Status"), **_problems(400, 405, 503)},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["ops"], "security": [],
            "responses": {"200": {"description": "This document",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}},
                          **_problems(400, 405)},
        }},
    }


def _schemas() -> dict[str, Any]:
    s = "string"
    return {
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": s}, "title": {"type": s}, "status": {"type": "integer"},
                "detail": {"type": s}, "code": {"type": s, "enum": sorted(ERROR_CODES)},
                "reason": {"type": s}, "field": {"type": s}, "correlation_id": {"type": s},
            },
        },
        "Credentials": {
            "type": "object", "required": ["username", "password"],
            "properties": {
                "username": {"type": s, "minLength": 3, "maxLength": 64,
                             "pattern": "^[A-Za-z0-9._@-]{3,64}$"},
                "password": {"type": s, "minLength": 10, "maxLength": 1024},
            },
        },
        "LoginRequest": {
            "type": "object", "required": ["username", "password"],
            "properties": {
                "username": {"type": s, "minLength": 1, "maxLength": 64},
                "password": {"type": s, "minLength": 1, "maxLength": 1024},
                "device_id": {"type": s, "maxLength": 128},
                "device_name": {"type": s, "maxLength": 128},
            },
        },
        "RefreshRequest": {
            "type": "object", "required": ["refresh_token"],
            "properties": {"refresh_token": {"type": s, "pattern": "^lkr_[A-Za-z0-9_-]{102}$"}},
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "refresh_token",
                         "session_id", "idle_timeout", "absolute_expires_in", "auth_level"],
            "properties": {
                "access_token": {"type": s}, "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer"}, "refresh_token": {"type": s},
                "session_id": {"type": s}, "idle_timeout": {"type": "integer"},
                "absolute_expires_in": {"type": "integer"},
                "auth_level": {"type": s, "enum": ["normal", "elevated"]},
            },
        },
        "UserCreated": {"type": "object", "required": ["user_id"],
                        "properties": {"user_id": {"type": s}}},
        "Me": {
            "type": "object", "required": ["user_id", "username", "session_id", "auth_level"],
            "properties": {"user_id": {"type": s}, "username": {"type": s},
                           "session_id": {"type": s},
                           "auth_level": {"type": s, "enum": ["normal", "elevated"]}},
        },
        "Jwks": {"type": "object", "required": ["keys"],
                 "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "Status": {"type": "object", "properties": {"status": {"type": s}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document (built once per process)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Latchkey", "version": "1.0.0",
                 "description": "Session layer for mobile apps. See API.md."},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {"Problem": {
                "description": "RFC 9457 problem details",
                "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}},
            }},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
