"""Describe the HTTP API as OpenAPI 3.1, the machine-readable twin of ../shared/API.md.

Kept as data beside the code it describes; tests check that every route the app serves is
here and every documented status is one the server really answers with.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .binding import DEVICE_ID_PATTERN
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


_OAUTH_ERROR = {"$ref": "#/components/responses/OAuthError"}


def _oauth_errors(*statuses: int) -> dict[str, Any]:
    """RFC 6749 section 5.2 errors of the OAuth endpoints; 405 is the app's problem+json
    (no route matched, so no OAuth handler applies)."""
    return {**{str(s): _OAUTH_ERROR for s in statuses}, "405": _PROBLEM}


def _form_body(schema_ref: str) -> dict[str, Any]:
    return {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": {"$ref": schema_ref}}}}


_BEARER = [{"bearer": []}, {"dpop": []}]
# Sent on every request so the server can compare it with the session's device (D3).
_DEVICE_ID = {"name": "X-Device-Id", "in": "header", "required": False,
              "description": "The app's stable device id, as sent at login; a change is "
                             "reported or ends the session (BINDING_POLICY)",
              "schema": {"type": "string", "pattern": DEVICE_ID_PATTERN}}
_COMMON = (400, 405, 413, 415, 429, 503)
# The DPoP proof header is described here, not as a parameter: no schema can say which
# strings are good proofs (a signed, fresh, single-use JWT), so a generator of
# "schema-valid" values would only ever make refused ones.
_DPOP_DESCRIPTION = (
    "RFC 9449: Authorization: DPoP <access token> for a DPoP-bound token, with a `DPoP` "
    "header carrying a proof JWT (typ dpop+jwt, ES256 or EdDSA, public jwk; htm, htu, iat, "
    "jti, ath). Token requests (login, refresh, reauth, password change, /oauth/token) may "
    "carry a proof to bind the session, and must for a bound one. Errors: "
    "invalid_dpop_proof, use_dpop_nonce (with DPoP-Nonce); see docs/API-NOTES.md")


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
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/LoginRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/auth/refresh": {"post": {
            "operationId": "refresh", "tags": ["auth"], "security": [],
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/RefreshRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/auth/logout": {"post": {
            "operationId": "logout", "tags": ["auth"], "security": [{"bearer": []}, {}],
            "description": "With a Bearer token the body is optional and ignored; without "
                           "one, refresh_token names the session to end.",
            "requestBody": _json_body("#/components/schemas/LogoutRequest", required=False),
            "responses": {"204": {"description": "Session ended (or already over)"},
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/auth/logout-all": {"post": {
            "operationId": "logoutAll", "tags": ["sessions"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/LogoutAllRequest", required=False),
            "responses": {"204": {"description": "The sessions in scope are ended"},
                          **_problems(401, *_COMMON)},
        }},
        "/v1/auth/sessions": {"get": {
            "operationId": "listSessions", "tags": ["sessions"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "responses": {**_ok("#/components/schemas/SessionList"),
                          **_problems(401, *_COMMON)},
        }},
        "/v1/auth/sessions/{session_id}": {"delete": {
            "operationId": "endSession", "tags": ["sessions"], "security": _BEARER,
            "parameters": [_DEVICE_ID, {
                "name": "session_id", "in": "path", "required": True,
                "description": "A session id from the session list; another user's, an "
                               "unknown or an ended one: 404",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{32}$"}}],
            "responses": {"204": {"description": "The session is ended"},
                          **_problems(401, 404, *_COMMON)},
        }},
        "/v1/auth/reauth": {"post": {
            "operationId": "reauth", "tags": ["sessions"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/ReauthRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, *_COMMON)},
        }},
        "/v1/auth/password": {"post": {
            "operationId": "changePassword", "tags": ["sessions"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/PasswordChangeRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_problems(401, 422, *_COMMON)},
        }},
        "/v1/me/sensitive": {"post": {
            "operationId": "sensitiveAction", "tags": ["account"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "responses": {**_ok("#/components/schemas/Ok"), **_problems(401, 403, *_COMMON)},
        }},
        "/v1/me": {"get": {
            "operationId": "me", "tags": ["account"], "security": _BEARER,
            "parameters": [_DEVICE_ID],
            "responses": {**_ok("#/components/schemas/Me"), **_problems(401, *_COMMON)},
        }},
        "/.well-known/jwks.json": {"get": {
            "operationId": "jwks", "tags": ["wellknown"], "security": [],
            "responses": {**_ok("#/components/schemas/Jwks"), **_problems(400, 405, 429)},
        }},
        "/.well-known/oauth-authorization-server": {"get": {
            "operationId": "oauthMetadata", "tags": ["oauth"], "security": [],
            "description": "RFC 8414 authorization server metadata; every URL derives from "
                           "LATCHKEY_ISSUER (docs/OAUTH.md).",
            "responses": {**_ok("#/components/schemas/OAuthMetadata"),
                          **_problems(400, 405, 429)},
        }},
        "/oauth/token": {"post": {
            "operationId": "oauthToken", "tags": ["oauth"],
            "security": [{}, {"clientBasic": []}],
            "description": "RFC 6749 section 6: grant_type=refresh_token for a public "
                           "client named by client_id (or Basic with an empty secret). "
                           "The same session rules as /v1/auth/refresh.",
            "parameters": [_DEVICE_ID],
            "requestBody": _form_body("#/components/schemas/OAuthTokenRequest"),
            "responses": {**_ok("#/components/schemas/TokenResponse"),
                          **_oauth_errors(400, 401, 413, 429, 503)},
        }},
        "/oauth/revoke": {"post": {
            "operationId": "oauthRevoke", "tags": ["oauth"],
            "security": [{}, {"clientBasic": []}],
            "description": "RFC 7009: a refresh or access token ends its session; 200 also "
                           "for unknown or already-dead tokens.",
            "requestBody": _form_body("#/components/schemas/OAuthTokenParameter"),
            "responses": {"200": {"description": "Revoked, or nothing to revoke"},
                          **_oauth_errors(400, 401, 413, 429, 503)},
        }},
        "/oauth/introspect": {"post": {
            "operationId": "oauthIntrospect", "tags": ["oauth"],
            "security": [{"clientBasic": []}],
            "description": "RFC 7662 for resource clients (HTTP Basic). Counts as activity "
                           "of the session.",
            "requestBody": _form_body("#/components/schemas/OAuthTokenParameter"),
            "responses": {**_ok("#/components/schemas/Introspection"),
                          **_oauth_errors(400, 401, 413, 429, 503)},
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["ops"], "security": [],
            "responses": {**_ok("#/components/schemas/Status"), **_problems(400, 405)},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["ops"], "security": [],
            "responses": {**_ok("#/components/schemas/Status"), **_problems(400, 405, 503)},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["ops"], "security": [],
            "description": "Prometheus text; only to LATCHKEY_METRICS_ALLOWED_NETWORKS, "
                           "404 to everyone else (docs/OPERATIONS.md).",
            "responses": {"200": {"description": "Prometheus text exposition",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_problems(400, 404, 405)},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["ops"], "security": [],
            "responses": {"200": {"description": "This document",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}},
                          **_problems(400, 405)},
        }},
    }


def _admin_paths() -> dict[str, Any]:
    """Return the admin HTTP view's paths, published only where it is served (ADMIN_HTTP)."""
    return {
        "/v1/admin/sessions": {"get": {
            "operationId": "adminListSessions", "tags": ["admin"], "security": _BEARER,
            "description": "Admin role and a step-up within STEP_UP_WINDOW; audited. "
                           "Non-admins get 404.",
            "parameters": [_DEVICE_ID,
                           {"name": "username", "in": "query", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {**_ok("#/components/schemas/AdminSessionList"),
                          **_problems(401, 403, 404, *_COMMON)},
        }},
        "/v1/admin/sessions/revoke": {"post": {
            "operationId": "adminRevokeSessions", "tags": ["admin"], "security": _BEARER,
            "description": "Admin role and a step-up within STEP_UP_WINDOW; audited. "
                           "Without session_id, every session of the user ends. "
                           "Non-admins get 404.",
            "parameters": [_DEVICE_ID],
            "requestBody": _json_body("#/components/schemas/AdminRevokeRequest"),
            "responses": {"204": {"description": "Ended, reason admin"},
                          **_problems(401, 403, 404, *_COMMON)},
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
                "device_id": {"type": s, "pattern": DEVICE_ID_PATTERN},
                "device_name": {"type": s, "maxLength": 128},
            },
        },
        "RefreshRequest": {
            "type": "object", "required": ["refresh_token"],
            "properties": {"refresh_token": {"type": s, "pattern": "^lkr_[A-Za-z0-9_-]{102}$"}},
        },
        # Logout's body: refresh_token is needed only without a Bearer token, which JSON
        # Schema cannot say of a header, so it is optional here (the 401 is documented).
        "LogoutRequest": {
            "type": "object",
            "properties": {"refresh_token": {"type": s, "pattern": "^lkr_[A-Za-z0-9_-]{102}$"}},
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "refresh_token",
                         "session_id", "idle_timeout", "absolute_expires_in", "auth_level"],
            "properties": {
                "access_token": {"type": s}, "token_type": {"enum": ["Bearer", "DPoP"]},
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
        "LogoutAllRequest": {
            "type": "object",
            "properties": {"scope": {"type": s, "enum": ["all", "others"], "default": "all"}},
        },
        "Session": {
            "type": "object",
            "required": ["session_id", "device_name", "user_agent", "ip", "created_at",
                         "last_seen_at", "expires_at", "auth_level", "current"],
            "properties": {
                "session_id": {"type": s}, "device_name": {"type": s},
                "user_agent": {"type": s}, "ip": {"type": s},
                "created_at": {"type": s, "format": "date-time"},
                "last_seen_at": {"type": s, "format": "date-time"},
                "expires_at": {"type": s, "format": "date-time",
                               "description": "When the session ends if unused until "
                                              "then: the earlier of the idle and the "
                                              "absolute limit"},
                "auth_level": {"type": s, "enum": ["normal", "elevated"]},
                "current": {"type": "boolean"},
            },
        },
        "SessionList": {"type": "object", "required": ["sessions"],
                        "properties": {"sessions": {
                            "type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
        "ReauthRequest": {"type": "object", "required": ["password"],
                          "properties": {"password": {"type": s, "minLength": 1,
                                                      "maxLength": 1024}}},
        "PasswordChangeRequest": {
            "type": "object", "required": ["current_password", "new_password"],
            "properties": {"current_password": {"type": s, "minLength": 1, "maxLength": 1024},
                           "new_password": {"type": s, "minLength": 10, "maxLength": 1024}},
        },
        "AdminSessionList": {
            "type": "object", "required": ["user_id", "sessions"],
            "properties": {"user_id": {"type": s}, "sessions": {
                "type": "array", "items": {"$ref": "#/components/schemas/Session"}}},
        },
        "AdminRevokeRequest": {
            "type": "object", "required": ["username"],
            "properties": {"username": {"type": s}, "session_id": {"type": s}},
        },
        "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
        "Jwks": {"type": "object", "required": ["keys"],
                 "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "Status": {"type": "object", "properties": {"status": {"type": s}}},
        **_oauth_schemas(),
    }


def _oauth_schemas() -> dict[str, Any]:
    s, i = "string", "integer"
    return {
        "OAuthError": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": s}, "error_description": {"type": s}},
        },
        "OAuthTokenRequest": {
            "type": "object", "required": ["grant_type", "refresh_token"],
            "properties": {"grant_type": {"const": "refresh_token"},
                           "refresh_token": {"type": s,
                                             "pattern": "^lkr_[A-Za-z0-9_-]{102}$"},
                           "client_id": {"type": s, "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
        },
        "OAuthTokenParameter": {
            "type": "object", "required": ["token"],
            "properties": {"token": {"type": s, "maxLength": 4096},
                           "token_type_hint": {"type": s,
                                               "enum": ["access_token", "refresh_token"]},
                           "client_id": {"type": s, "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
        },
        "Introspection": {
            "type": "object", "required": ["active"],
            "description": "Inactive: exactly {\"active\": false}. A refresh token has no iat.",
            "properties": {
                "active": {"type": "boolean"}, "sub": {"type": s}, "sid": {"type": s},
                "client_id": {"type": s}, "iss": {"type": s}, "aud": {"type": s},
                "exp": {"type": i}, "iat": {"type": i},
                "token_type": {"type": s, "enum": ["access_token", "refresh_token"]},
                "auth_level": {"type": s, "enum": ["normal", "elevated"]},
                "auth_time": {"type": i},
                "cnf": {"type": "object", "required": ["jkt"],
                        "description": "RFC 9449 section 6.2: a DPoP-bound token's key",
                        "properties": {"jkt": {"type": s}}},
            },
        },
        "OAuthMetadata": {
            "type": "object",
            "required": ["issuer", "token_endpoint", "jwks_uri", "response_types_supported",
                         "grant_types_supported", "revocation_endpoint",
                         "introspection_endpoint"],
            "properties": {name: {"type": s} for name in (
                "issuer", "token_endpoint", "jwks_uri", "revocation_endpoint",
                "introspection_endpoint")} | {name: {"type": "array", "items": {"type": s}}
                                              for name in (
                "response_types_supported", "grant_types_supported",
                "token_endpoint_auth_methods_supported",
                "revocation_endpoint_auth_methods_supported",
                "introspection_endpoint_auth_methods_supported",
                "dpop_signing_alg_values_supported")},
        },
    }


@cache
def openapi_document(*, admin_http: bool = False) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of what this server serves (built once per process).

    The admin paths are listed only when the admin HTTP view is on: a document that
    advertised paths which answer 404 would undo the point of their answering 404.
    """
    paths = {**_paths(), **(_admin_paths() if admin_http else {})}
    schemas = {name: schema for name, schema in _schemas().items()
               if admin_http or not name.startswith("Admin")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Latchkey", "version": "1.0.0",
                 "description": "Session layer for mobile apps. See API.md."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Problem": {
                "description": "RFC 9457 problem details",
                "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}},
            }, "OAuthError": {
                "description": "RFC 6749 section 5.2 error (the OAuth endpoints)",
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/OAuthError"}}},
            }},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"},
                                "dpop": {"type": "http", "scheme": "DPoP",
                                         "bearerFormat": "JWT",
                                         "description": _DPOP_DESCRIPTION},
                                "clientBasic": {"type": "http", "scheme": "basic",
                                                "description": "client_id:client_secret "
                                                               "of a resource client"}},
        },
    }
